// Command process-example is the smallest outbox behind the harness's process contract (docs/adapters.md,
// "Process adapters"): one table, a publisher that inserts into it in its own transaction, and max_workers
// loops that lock a batch with FOR UPDATE SKIP LOCKED, run the harness handler, and delete the row (or count a
// failure, dead after max_attempts) before committing. The harness side is harnessproc (adapters/river).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/outbox-harness/adapters/river/harnessproc"
)

const ddl = `DROP TABLE IF EXISTS example_outbox;
CREATE TABLE example_outbox (id bigserial PRIMARY KEY, payload bytea NOT NULL, failures int NOT NULL DEFAULT 0,
                             dead boolean NOT NULL DEFAULT false)`

func connect(ctx context.Context, dsn, app string, size int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns, cfg.ConnConfig.RuntimeParams["application_name"] = int32(size), app
	return pgxpool.NewWithConfig(ctx, cfg)
}

func schema(ctx context.Context, req *harnessproc.SchemaRequest) (harnessproc.OK, error) {
	pool, err := connect(ctx, req.DSN, "harness-schema", 1)
	if err == nil {
		defer pool.Close()
		_, err = pool.Exec(ctx, ddl)
	}
	return harnessproc.OK{OK: err == nil}, err
}

func state(ctx context.Context, req *harnessproc.StateRequest) (harnessproc.State, error) {
	st := harnessproc.State{Pending: [][]byte{}, Dead: [][]byte{}}
	pool, err := connect(ctx, req.DSN, "harness-state", 1)
	if err != nil {
		return st, err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, "SELECT payload, dead FROM example_outbox ORDER BY id")
	if err != nil {
		return st, err
	}
	var payload []byte
	var dead bool
	_, err = pgx.ForEachRow(rows, []any{&payload, &dead}, func() error {
		if dead {
			st.Dead = append(st.Dead, payload)
		} else {
			st.Pending = append(st.Pending, payload)
		}
		return nil
	})
	return st, err
}

type publisher struct{ pool *pgxpool.Pool }

func open(ctx context.Context, req *harnessproc.PublishRequest) (harnessproc.Publisher, error) {
	pool, err := connect(ctx, req.DSN, req.ApplicationName, 1)
	return &publisher{pool}, err
}

func (p *publisher) Publish(ctx context.Context, req *harnessproc.PublishRequest) harnessproc.PublishReply {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return harnessproc.Refused(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if req.Business != nil {
		sql := fmt.Sprintf("INSERT INTO %s (mid) SELECT unnest($1::text[])", pgx.Identifier{*req.Business}.Sanitize())
		if _, err := tx.Exec(ctx, sql, req.Mids); err != nil {
			return harnessproc.Refused(err)
		}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO example_outbox (payload) SELECT unnest($1::bytea[])", req.Payloads); err != nil {
		return harnessproc.Refused(err)
	}
	if req.Rollback {
		return harnessproc.Committed() // the deferred ROLLBACK: nothing was ever sent to commit
	}
	if err := tx.Commit(ctx); err != nil {
		return harnessproc.Unknown(err)
	}
	return harnessproc.Committed()
}

func (p *publisher) Close() { p.pool.Close() }

// consume runs max_workers claim loops until ctx ends, then lets the batches in hand finish within
// graceful_timeout (their transactions roll back if they do not: the rows are simply unlocked).
func consume(ctx context.Context, spec *harnessproc.WorkerSpec, h *harnessproc.Handler, log *slog.Logger) error {
	c := spec.Config
	pool, err := connect(context.Background(), spec.DSN, spec.ApplicationName, c.MaxWorkers)
	if err != nil {
		return err
	}
	defer pool.Close()
	work, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-ctx.Done(); time.AfterFunc(harnessproc.Seconds(c.GracefulTimeout), cancel) }()
	var loops sync.WaitGroup
	for range c.MaxWorkers {
		loops.Go(func() {
			for ctx.Err() == nil {
				if n, err := claim(work, pool, h, c); err != nil {
					log.Warn("claim loop", "err", err)
					time.Sleep(harnessproc.Seconds(c.MaxFetchInterval))
				} else if n == 0 {
					time.Sleep(harnessproc.Seconds(c.MaxFetchInterval))
				}
			}
		})
	}
	loops.Wait()
	return nil
}

type row struct {
	ID       int64
	Payload  []byte
	Failures int
}

// claim locks a batch, handles it row by row and commits: deleted when handled, a failure counted otherwise.
func claim(ctx context.Context, pool *pgxpool.Pool, h *harnessproc.Handler, c harnessproc.ConsumerConfig) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT id, payload, failures FROM example_outbox WHERE NOT dead ORDER BY id
		                         LIMIT $1 FOR UPDATE SKIP LOCKED`, max(1, c.FetchBatchSize/c.MaxWorkers))
		batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			return err
		}
		n = len(batch)
		for _, r := range batch {
			failed := h.Handle(ctx, r.Payload, harnessproc.Call{Key: fmt.Sprint(r.ID)})
			if ctx.Err() != nil {
				return ctx.Err() // cut off by the stop: roll back, the rows are unlocked
			}
			if failed == nil {
				_, err = tx.Exec(ctx, "DELETE FROM example_outbox WHERE id = $1", r.ID)
			} else {
				_, err = tx.Exec(ctx, "UPDATE example_outbox SET failures = failures + 1, dead = $2 WHERE id = $1",
					r.ID, r.Failures+1 >= c.Attempts())
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

func main() {
	switch cmd := append(os.Args, "")[1]; cmd {
	case "schema":
		os.Exit(harnessproc.Command(schema))
	case "state":
		os.Exit(harnessproc.Command(state))
	case "publish":
		if err := harnessproc.ServePublisher(context.Background(), os.Stdin, os.Stdout, open); err != nil {
			os.Exit(1)
		}
	case "consume":
		os.Exit(harnessproc.Consume(os.Args[2], "process-example", consume))
	default:
		fmt.Fprintf(os.Stderr, "usage: process-example schema|state|publish|consume SPEC (not %q)\n", cmd)
		os.Exit(2)
	}
}
