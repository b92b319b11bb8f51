package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/outbox-harness/adapters/river/harnessproc"
)

// deliverArgs is the one job kind: the harness payload, base64 in River's JSON args.
type deliverArgs struct {
	Payload []byte `json:"payload"`
}

func (deliverArgs) Kind() string { return "harness_deliver" }

// newPool opens a pgx pool whose every connection carries the harness's application_name.
func newPool(ctx context.Context, dsn, app string, size int, statementTimeout float64) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(size)
	cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	if statementTimeout > 0 {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.Itoa(int(statementTimeout * 1000))
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// createSchema drops every River migration and applies them again (rivermigrate, River's own DDL).
func createSchema(ctx context.Context, req *harnessproc.SchemaRequest) (harnessproc.OK, error) {
	pool, err := newPool(ctx, req.DSN, "harness-schema", 2, 0)
	if err != nil {
		return harnessproc.OK{}, err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return harnessproc.OK{}, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{TargetVersion: -1}); err != nil {
		return harnessproc.OK{}, fmt.Errorf("migrating down: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return harnessproc.OK{}, fmt.Errorf("migrating up: %w", err)
	}
	return harnessproc.OK{OK: true}, nil
}

// readState lists jobs with River's JobList: completed ones are done; discarded (attempts spent) and cancelled
// ones are dead; every other state (available, scheduled, retryable, running, pending) is still pending.
func readState(ctx context.Context, req *harnessproc.StateRequest) (harnessproc.State, error) {
	state := harnessproc.State{Pending: [][]byte{}, Dead: [][]byte{}}
	pool, err := newPool(ctx, req.DSN, "harness-state", 2, 0)
	if err != nil {
		return state, err
	}
	defer pool.Close()
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		return state, err
	}
	const page = 10_000
	params := river.NewJobListParams().States(rivertype.JobStateAvailable, rivertype.JobStateCancelled,
		rivertype.JobStateDiscarded, rivertype.JobStatePending, rivertype.JobStateRetryable,
		rivertype.JobStateRunning, rivertype.JobStateScheduled).First(page)
	for {
		res, err := client.JobList(ctx, params)
		if err != nil {
			return state, err
		}
		for _, job := range res.Jobs {
			var args deliverArgs
			if err := json.Unmarshal(job.EncodedArgs, &args); err != nil {
				return state, fmt.Errorf("job %d: %w", job.ID, err)
			}
			if job.State == rivertype.JobStateDiscarded || job.State == rivertype.JobStateCancelled {
				state.Dead = append(state.Dead, args.Payload)
			} else {
				state.Pending = append(state.Pending, args.Payload)
			}
		}
		if len(res.Jobs) < page {
			return state, nil
		}
		params = params.After(res.LastCursor)
	}
}

// publisher inserts with InsertManyTx in a transaction of its own, beside the business rows.
type publisher struct {
	pool     *pgxpool.Pool
	client   *river.Client[pgx.Tx]
	attempts int
}

func openPublisher(ctx context.Context, req *harnessproc.PublishRequest) (harnessproc.Publisher, error) {
	pool, err := newPool(ctx, req.DSN, req.ApplicationName, 2, req.Config.StatementTimeoutSeconds)
	if err != nil {
		return nil, err
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{}) // insert-only
	if err != nil {
		pool.Close()
		return nil, err
	}
	// River stamps max_attempts on the row at insert: the consumer's budget must travel with the job.
	return &publisher{pool, client, req.Config.Attempts()}, nil
}

func (p *publisher) Publish(ctx context.Context, req *harnessproc.PublishRequest) harnessproc.PublishReply {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return harnessproc.Refused(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // a no-op once committed
	if req.Business != nil {
		sql := fmt.Sprintf("INSERT INTO %s (mid) SELECT unnest($1::text[])", pgx.Identifier{*req.Business}.Sanitize())
		if _, err := tx.Exec(ctx, sql, req.Mids); err != nil {
			return harnessproc.Refused(err)
		}
	}
	params := make([]river.InsertManyParams, len(req.Payloads))
	for i, payload := range req.Payloads {
		params[i] = river.InsertManyParams{Args: deliverArgs{Payload: payload},
			InsertOpts: &river.InsertOpts{Queue: req.Queue, MaxAttempts: p.attempts}}
	}
	if _, err := p.client.InsertManyTx(ctx, tx, params); err != nil {
		return harnessproc.Refused(err)
	}
	if req.Rollback {
		if err := tx.Rollback(ctx); err != nil {
			return harnessproc.Refused(err)
		}
		return harnessproc.Committed()
	}
	if err := tx.Commit(ctx); err != nil {
		return harnessproc.Unknown(err) // COMMIT was sent: it may have landed
	}
	return harnessproc.Committed()
}

func (p *publisher) Close() { p.pool.Close() }

// retryPolicy is the harness's RetryConfig as River's ClientRetryPolicy; River applies it to failed jobs and to
// jobs its rescuer takes back from a dead worker. Delays are counted from this client's clock.
type retryPolicy struct{ retry harnessproc.RetryConfig }

func (r retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	return time.Now().Add(r.retry.Delay(len(job.Errors) + 1))
}

// callKey tells two calls of one job apart: River bumps attempt at every fetch.
type callKey struct {
	id      int64
	attempt int
}

// deliverWorker hands every job to the harness handler.
type deliverWorker struct {
	river.WorkerDefaults[deliverArgs]
	h     *harnessproc.Handler
	calls sync.Map // callKey -> harnessproc.Call, until River reports what it did with the row
}

func (w *deliverWorker) Work(ctx context.Context, job *river.Job[deliverArgs]) error {
	// attempted_at is set by now() in River's fetch statement: the lease start by the database clock.
	call := harnessproc.Call{LeaseAt: job.AttemptedAt, Delivery: job.Attempt, Key: strconv.FormatInt(job.ID, 10)}
	w.calls.Store(callKey{job.ID, job.Attempt}, call)
	return w.h.Handle(ctx, job.Args.Payload, call)
}

// settle records a completion event once River's completer has written it. River emits events for rows it
// finds no longer running too (a stale completion), so these are what River says, not a fenced outcome.
func (w *deliverWorker) settle(ev *river.Event) {
	job := ev.Job
	attempt := job.Attempt
	var outcome string
	switch {
	case ev.Kind == river.EventKindJobCompleted:
		outcome = "acked"
	case ev.Kind == river.EventKindJobFailed && job.State == rivertype.JobStateDiscarded:
		outcome = "dead_lettered"
	case ev.Kind == river.EventKindJobFailed:
		outcome = "retry"
	case ev.Kind == river.EventKindJobCancelled:
		outcome = "dropped"
	case ev.Kind == river.EventKindJobInterrupted:
		outcome, attempt = "released", attempt+1 // a soft-stopped job gives its attempt back
	default:
		return
	}
	var args deliverArgs
	if err := json.Unmarshal(job.EncodedArgs, &args); err != nil {
		return
	}
	call := harnessproc.Call{LeaseAt: job.AttemptedAt, Delivery: attempt, Key: strconv.FormatInt(job.ID, 10)}
	if known, ok := w.calls.LoadAndDelete(callKey{job.ID, attempt}); ok {
		call = known.(harnessproc.Call)
	}
	w.h.Settled(args.Payload, outcome, call)
}

// consume runs one River client until ctx ends (SIGTERM), then stops: fetching ends at once, running jobs get
// SoftStopTimeout (graceful_timeout), then their contexts are cancelled and River makes them available again.
func consume(ctx context.Context, spec *harnessproc.WorkerSpec, h *harnessproc.Handler, log *slog.Logger) error {
	c := spec.Config
	size := max(4, c.MaxWorkers+2)
	if c.PoolSize != nil {
		size = *c.PoolSize
	}
	pool, err := newPool(context.Background(), spec.DSN, spec.ApplicationName, size, c.StatementTimeoutSeconds)
	if err != nil {
		return err
	}
	defer pool.Close()
	worker := &deliverWorker{h: h}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, worker); err != nil {
		return err
	}
	cooldown := max(time.Millisecond, harnessproc.Seconds(c.MinFetchInterval))
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		ID:                   spec.ApplicationName,
		Queues:               map[string]river.QueueConfig{c.Queue: {MaxWorkers: c.MaxWorkers}},
		Workers:              workers,
		FetchCooldown:        cooldown,
		FetchPollInterval:    max(cooldown, harnessproc.Seconds(c.MaxFetchInterval)),
		// River's rescuer skips a running job until its JobTimeout has passed (never, without one), so the
		// lease is both: the handler's context ends at it, and a dead worker's job is rescued after it.
		RescueStuckJobsAfter: harnessproc.Seconds(c.LeaseTTLSeconds),
		JobTimeout:           harnessproc.Seconds(c.LeaseTTLSeconds),
		MaxAttempts:          c.Attempts(),
		RetryPolicy:          retryPolicy{c.Retry},
		SoftStopTimeout:      harnessproc.Seconds(c.GracefulTimeout),
		Logger:               log,
	})
	if err != nil {
		return err
	}
	events, unsubscribe := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed,
		river.EventKindJobCancelled, river.EventKindJobInterrupted)
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		for ev := range events {
			worker.settle(ev)
		}
	}()
	defer func() { unsubscribe(); <-settled }()
	if err := client.Start(ctx); err != nil {
		return fmt.Errorf("river client did not start: %w", err)
	}
	<-ctx.Done()
	select { // Start's context ended: River soft-stops, then cancels what is still running
	case <-client.Stopped():
	case <-time.After(harnessproc.Seconds(c.GracefulTimeout) + 5*time.Second):
		log.Error("river client did not stop within graceful_timeout + 5 s; exiting anyway")
	}
	return nil
}
