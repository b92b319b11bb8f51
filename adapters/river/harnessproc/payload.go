package harnessproc

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

// Payload is harness.payload.decode_script: {"body": "<json with mid, poison, pad, script?>", "crc": crc32(body)}.
type Payload struct {
	Mid    *string // nil when the payload is unreadable
	Intact bool    // the body's CRC-32 matches
	Poison bool
	Script []map[string]any // per-delivery steps: {"ms": n} runs that long, {"fail": true} raises after it
}

// DecodePayload never fails: an unreadable payload has no mid and is not intact.
func DecodePayload(raw []byte) Payload {
	var outer struct {
		Body *string      `json:"body"`
		CRC  *json.Number `json:"crc"`
	}
	if err := json.Unmarshal(raw, &outer); err != nil || outer.Body == nil || outer.CRC == nil {
		return Payload{}
	}
	var body struct {
		Mid    any              `json:"mid"`
		Poison bool             `json:"poison"`
		Script []map[string]any `json:"script"`
	}
	if err := json.Unmarshal([]byte(*outer.Body), &body); err != nil || body.Mid == nil {
		return Payload{}
	}
	mid, ok := body.Mid.(string)
	if !ok {
		mid = fmt.Sprint(body.Mid)
	}
	crc, err := outer.CRC.Int64()
	intact := err == nil && crc == int64(crc32.ChecksumIEEE([]byte(*outer.Body)))
	return Payload{Mid: &mid, Intact: intact, Poison: body.Poison, Script: body.Script}
}

// MidOf is the payload's mid, or nil.
func MidOf(raw []byte) any {
	if p := DecodePayload(raw); p.Mid != nil {
		return *p.Mid
	}
	return nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// DeliveryCounter is harness.deliveries.DeliveryCounter: which delivery of a message this is, counted by the
// harness across every worker process, one byte appended per call under an exclusive flock of a per-mid file.
type DeliveryCounter struct{ dir string }

// NewDeliveryCounter creates the shared directory if needed.
func NewDeliveryCounter(dir string) (*DeliveryCounter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &DeliveryCounter{dir}, nil
}

// Next counts one more delivery of mid and returns its number (1 for the first).
func (c *DeliveryCounter) Next(mid string) (int, error) {
	f, err := os.OpenFile(filepath.Join(c.dir, unsafeName.ReplaceAllString(mid, "_")),
		os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return 0, err
	}
	if _, err := f.Write([]byte{'.'}); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return int(st.Size()), nil
}
