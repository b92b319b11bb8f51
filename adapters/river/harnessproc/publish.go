package harnessproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// PublishRequest is one line on the publisher's stdin. The first line is {"op":"open","dsn":...,
// "application_name":...,"config":{ConsumerConfig}}; every later one {"op":"publish","mids":[...],
// "payloads":[base64...],"rollback":bool,"business":"table" or null,"queue":"..."}.
type PublishRequest struct {
	Op              string         `json:"op"`
	DSN             string         `json:"dsn"`
	ApplicationName string         `json:"application_name"`
	Config          ConsumerConfig `json:"config"`
	Mids            []string       `json:"mids"`
	Payloads        [][]byte       `json:"payloads"` // base64 in JSON
	Rollback        bool           `json:"rollback"`
	Business        *string        `json:"business"` // table for one business row per mid; null: none
	Queue           string         `json:"queue"`
}

// PublishReply is one line on stdout per request: {"ok":true} when the transaction did what was asked
// (committed, or rolled back on request); {"ok":false,"definite":true,"error":...} when it surely did not
// commit; {"ok":false,"definite":false,"error":...} when COMMIT was sent and its outcome is unknown.
type PublishReply struct {
	OK       bool   `json:"ok"`
	Definite *bool  `json:"definite,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Committed, Refused and Unknown build the three replies.
func Committed() PublishReply { return PublishReply{OK: true} }

func Refused(err error) PublishReply {
	yes := true
	return PublishReply{Definite: &yes, Error: err.Error()}
}

func Unknown(err error) PublishReply {
	no := false
	return PublishReply{Definite: &no, Error: err.Error()}
}

// Publisher runs one publish request in its own transaction on its own connection.
type Publisher interface {
	Publish(ctx context.Context, req *PublishRequest) PublishReply
	Close()
}

// ServePublisher is the program's `publish` entry point: open from the first line, then one reply per request
// until stdin closes. Replies to requests that cannot be read are definite refusals.
func ServePublisher(ctx context.Context, in io.Reader, out io.Writer, open func(ctx context.Context, req *PublishRequest) (Publisher, error)) error {
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(out)
	var pub Publisher
	defer func() {
		if pub != nil {
			pub.Close()
		}
	}()
	for lines.Scan() {
		var req PublishRequest
		if err := json.Unmarshal(lines.Bytes(), &req); err != nil {
			if err := enc.Encode(Refused(fmt.Errorf("unreadable request: %w", err))); err != nil {
				return err
			}
			continue
		}
		var reply PublishReply
		switch {
		case req.Op == "open" && pub == nil:
			var err error
			if pub, err = open(ctx, &req); err != nil {
				reply = Refused(err)
			} else {
				reply = Committed()
			}
		case req.Op == "publish" && pub != nil:
			reply = pub.Publish(ctx, &req)
		default:
			reply = Refused(fmt.Errorf("unexpected op %q (open first, once)", req.Op))
		}
		if err := enc.Encode(reply); err != nil {
			return err
		}
	}
	return lines.Err()
}

// Command runs a one-shot subcommand (schema, state): one JSON request on stdin, one JSON reply on stdout,
// exit 1 with {"ok":false,"error":...} when it fails.
func Command[Req any, Reply any](run func(ctx context.Context, req *Req) (Reply, error)) int {
	var req Req
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"ok": false, "error": "unreadable request: " + err.Error()})
		return 1
	}
	reply, err := run(context.Background(), &req)
	if err != nil {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"ok": false, "error": err.Error()})
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(reply); err != nil {
		return 1
	}
	return 0
}

// SchemaRequest is the `schema` subcommand's input: drop what the library owns, create it again.
type SchemaRequest struct {
	DSN    string         `json:"dsn"`
	Config ConsumerConfig `json:"config"`
}

// StateRequest is the `state` subcommand's input.
type StateRequest struct {
	DSN string `json:"dsn"`
}

// State is the `state` subcommand's reply: payloads (base64 in JSON) still pending or leased, and those
// dead-lettered or terminally failed, one entry per row.
type State struct {
	Pending [][]byte `json:"pending"`
	Dead    [][]byte `json:"dead"`
}

// OK is the `schema` subcommand's reply.
type OK struct {
	OK bool `json:"ok"`
}
