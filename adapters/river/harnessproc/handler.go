package harnessproc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrHandlerFailure is what the handler returns on purpose (a poison message or a scripted failure): the
// library must treat it as a failed call.
var ErrHandlerFailure = errors.New("harness handler failure")

// Call is what the library knows about one delivery (harness.adapter.DeliveryInfo).
type Call struct {
	LeaseAt  *time.Time // lease start by the database clock, only if it really is
	Delivery int        // how many times the row was claimed, this time included; 0 when unknown
	Key      string     // the library's row id, for logs
}

// Values are the keys a completion or settle echoes so the checkers can tell two calls of one mid apart.
func (c Call) Values() map[string]any {
	v := map[string]any{"lease_at": nil, "delivery": nil}
	if c.LeaseAt != nil {
		v["lease_at"] = Epoch(*c.LeaseAt)
	}
	if c.Delivery > 0 {
		v["delivery"] = c.Delivery
	}
	return v
}

// Handler is harness.worker's handler: records the call, sleeps the scenario's duration (or the script's), fails
// poison and scripted failures. A call whose context is cancelled first (a hard stop) is left without
// completion, as in the Python worker: the process ends next, and the harness judges what happens to its row. A
// call whose context reaches its deadline (the library's per-job timeout) fails, recorded with error "timeout".
type Handler struct {
	History *History
	Spec    HandlerSpec
	Counter *DeliveryCounter // nil: scripts are not counted (no directory given)
	Seed    *uint64          // the spec's: the handler's timing replays with it
	calls   atomic.Int64
}

// Handle runs one call of payload.
func (h *Handler) Handle(ctx context.Context, payload []byte, call Call) error {
	n := h.calls.Add(1)
	p := DecodePayload(payload)
	echo := call.Values()
	step := map[string]any{}
	if len(p.Script) > 0 && p.Mid != nil && h.Counter != nil {
		k, err := h.Counter.Next(*p.Mid)
		if err != nil {
			return fmt.Errorf("delivery counter: %w", err)
		}
		if k <= len(p.Script) {
			step = p.Script[k-1]
		}
		echo["scripted"] = k
	}
	var mid any
	if p.Mid != nil {
		mid = *p.Mid
	}
	h.History.Record("invoke", "deliver", merge(map[string]any{"mid": mid, "intact": p.Intact, "key": call.Key}, echo))
	wait := h.Spec.Duration(n, h.Seed)
	if ms, ok := step["ms"].(float64); ok {
		wait = Seconds(ms / 1000)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			h.History.Record("fail", "deliver", merge(map[string]any{"mid": mid, "error": "timeout"}, echo))
		}
		return ctx.Err()
	}
	failStep, _ := step["fail"].(bool)
	if p.Poison || failStep {
		why := "scripted"
		if p.Poison {
			why = "poison"
		}
		h.History.Record("fail", "deliver", merge(map[string]any{"mid": mid, "error": why}, echo))
		return fmt.Errorf("%w: %s failure of %v", ErrHandlerFailure, why, mid)
	}
	h.History.Record("ok", "deliver", merge(map[string]any{"mid": mid}, echo))
	return nil
}

// Settled records what the library did with the row after a call: acked | retry | dead_lettered | dropped |
// released, or lease_lost | error when its write was refused.
func (h *Handler) Settled(payload []byte, outcome string, call Call) {
	typ := "ok"
	if outcome == "lease_lost" || outcome == "error" {
		typ = "fail"
	}
	h.History.Record(typ, "settle", merge(map[string]any{"mid": MidOf(payload), "outcome": outcome}, call.Values()))
}

// Claimed records the rows a claim statement returned (and their database-clock lease start when known).
func (h *Handler) Claimed(payloads [][]byte, leaseAt *time.Time) {
	mids := make([]any, len(payloads))
	for i, p := range payloads {
		mids[i] = MidOf(p)
	}
	v := map[string]any{"mids": mids}
	if leaseAt != nil {
		v["lease_at"] = Epoch(*leaseAt)
	}
	h.History.Record("ok", "claim", v)
}

func merge(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}
