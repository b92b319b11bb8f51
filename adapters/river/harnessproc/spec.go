// Package harnessproc is the harness's side of the process-adapter contract (docs/adapters.md, "Process
// adapters"), in Go: the WorkerSpec a consumer is started with, the history it writes, the harness handler
// (payload checks, poison, scripted deliveries counted across processes) and the publisher's line protocol.
// An adapter program for a Go library links it and only adds the library's own calls.
package harnessproc

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"time"
)

// RetryConfig mirrors harness.adapter.RetryConfig.
type RetryConfig struct {
	Kind                string  `json:"kind"` // exponential | constant | none
	InitialDelaySeconds float64 `json:"initial_delay_seconds"`
	Multiplier          float64 `json:"multiplier"`
	MaxDelaySeconds     float64 `json:"max_delay_seconds"`
	MaxAttempts         int     `json:"max_attempts"`
	JitterFactor        float64 `json:"jitter_factor"`
}

// Delay is the wait before the retry that follows failure number attempt (1-based), jittered as the reference
// outbox does (exponential: base × (1 ± jitter_factor)).
func (r RetryConfig) Delay(attempt int) time.Duration {
	var s float64
	switch r.Kind {
	case "none":
		return 0
	case "constant":
		s = r.InitialDelaySeconds
	default:
		s = math.Min(r.MaxDelaySeconds, r.InitialDelaySeconds*math.Pow(r.Multiplier, float64(attempt-1)))
		if r.JitterFactor > 0 {
			s *= 1 + (rand.Float64()*2-1)*r.JitterFactor
		}
	}
	return Seconds(s)
}

// ConsumerConfig mirrors harness.adapter.ConsumerConfig (ConsumerConfig.to_dict()).
type ConsumerConfig struct {
	Queue                   string      `json:"queue"`
	MaxWorkers              int         `json:"max_workers"`
	FetchBatchSize          int         `json:"fetch_batch_size"`
	LeaseTTLSeconds         float64     `json:"lease_ttl_seconds"`
	MaxDeliveries           *int        `json:"max_deliveries"`
	Retry                   RetryConfig `json:"retry"`
	DLQ                     bool        `json:"dlq"`
	GracefulTimeout         float64     `json:"graceful_timeout"`
	MinFetchInterval        float64     `json:"min_fetch_interval"`
	MaxFetchInterval        float64     `json:"max_fetch_interval"`
	PoolSize                *int        `json:"pool_size"`
	StatementTimeoutSeconds float64     `json:"statement_timeout_seconds"`
}

// Attempts is the single attempt budget of libraries that count every claim, crash reclaims included:
// min(retry.max_attempts, max_deliveries), 1 without retries.
func (c ConsumerConfig) Attempts() int {
	n := max(1, c.Retry.MaxAttempts)
	if c.Retry.Kind == "none" {
		n = 1
	}
	if c.MaxDeliveries != nil {
		n = min(n, max(1, *c.MaxDeliveries))
	}
	return n
}

// HandlerSpec mirrors harness.worker.HandlerSpec.
type HandlerSpec struct {
	BaseMs       float64 `json:"base_ms"`
	JitterMs     float64 `json:"jitter_ms"`
	SlowFraction float64 `json:"slow_fraction"`
	SlowS        float64 `json:"slow_s"`
	SlowFirst    int     `json:"slow_first"`
	Noop         bool    `json:"noop"`
	Expect       int     `json:"expect"`
}

// Duration of call number call (1-based) of this process, drawn from seed (the spec's) and the call number, so a
// run with the same seed draws the same durations whatever order concurrent calls take; nil seed: unseeded.
func (h HandlerSpec) Duration(call int64, seed *uint64) time.Duration {
	r := rand.New(rand.NewPCG(rand.Uint64(), uint64(call)))
	if seed != nil {
		r = rand.New(rand.NewPCG(*seed, uint64(call)))
	}
	if call <= int64(h.SlowFirst) || (h.SlowFraction > 0 && r.Float64() < h.SlowFraction) {
		return Seconds(h.SlowS)
	}
	return Seconds(math.Max(0, h.BaseMs+(r.Float64()*2-1)*h.JitterMs) / 1000)
}

// WorkerSpec is harness.worker.WorkerSpec: the JSON file the supervisor writes for every incarnation.
type WorkerSpec struct {
	Impl            string         `json:"impl"`
	DSN             string         `json:"dsn"` // masked in the file; see DSNEnv
	Process         string         `json:"process"`
	History         string         `json:"history"`
	Config          ConsumerConfig `json:"config"`
	Handler         HandlerSpec    `json:"handler"`
	Deliveries      string         `json:"deliveries"`
	ApplicationName string         `json:"application_name"`
	Seed            *uint64        `json:"seed"` // of this incarnation's handler timing, from the run's seed; nil: unseeded
}

// DSNEnv carries the real DSN (harness.worker.DSN_ENV): the spec file, kept as evidence, holds it masked.
const DSNEnv = "OUTBOX_HARNESS_DSN"

// LoadSpec reads a WorkerSpec, with the DSN from DSNEnv when set; application_name defaults to
// "harness-" + process, as the harness names it.
func LoadSpec(path string) (*WorkerSpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec WorkerSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("spec %s: %w", path, err)
	}
	if dsn := os.Getenv(DSNEnv); dsn != "" {
		spec.DSN = dsn
	}
	if spec.ApplicationName == "" {
		spec.ApplicationName = "harness-" + spec.Process
	}
	return &spec, nil
}

// Seconds converts the harness's float seconds.
func Seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}
