package harnessproc

import (
	"encoding/json"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// clockMonotonic is CLOCK_MONOTONIC, the clock of Python's time.monotonic(): every process on the host shares it,
// so the runner can merge histories by it (Go's own monotonic reading is not exposed as an absolute value).
const clockMonotonic = 1

// Monotonic returns clock_gettime(CLOCK_MONOTONIC) in seconds.
func Monotonic() float64 {
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// Epoch returns t as Unix seconds, the form the harness reads lease_at and wall in.
func Epoch(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// event is harness.history.Event; field order and compact encoding matter: the harness's readers look for
// `"type":"...","f":"..."` before parsing a line.
type event struct {
	T       float64        `json:"t"`
	Wall    float64        `json:"wall"`
	Process string         `json:"process"`
	Type    string         `json:"type"`
	F       string         `json:"f"`
	Value   map[string]any `json:"value"`
}

// History appends one JSON line per event with a single write(2), so a SIGKILL tears at most the last line.
type History struct {
	mu      sync.Mutex
	file    *os.File
	process string
}

// OpenHistory opens (appends to) the history file of one process.
func OpenHistory(path, process string) (*History, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &History{file: f, process: process}, nil
}

// Record writes one event: type is invoke | ok | fail | info, f the operation (deliver, settle, worker, ...).
func (h *History) Record(typ, f string, value map[string]any) {
	if value == nil {
		value = map[string]any{}
	}
	line, err := json.Marshal(event{Monotonic(), Epoch(time.Now()), h.process, typ, f, value})
	if err != nil {
		line, _ = json.Marshal(event{Monotonic(), Epoch(time.Now()), h.process, "info", "log",
			map[string]any{"level": "ERROR", "logger": "harnessproc", "message": "unencodable event: " + err.Error()}})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = h.file.Write(append(line, '\n'))
}

// Close syncs and closes the file.
func (h *History) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.file.Sync()
	_ = h.file.Close()
}
