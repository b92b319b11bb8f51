package harnessproc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// ExitRefused is the exit code of a consumer that refused to start (harness.worker.EXIT_REFUSED).
const ExitRefused = 3

// Consume is the program's `consume SPEC` entry point: it opens the history, records the worker's lifecycle, runs
// run until it returns (its context ends on SIGTERM or SIGINT: stop fetching, drain within graceful_timeout) and
// returns the exit code. run gets the handler to call for every delivery and a logger whose WARN and above
// reach the history as `log` events of logger.
func Consume(specPath, logger string, run func(ctx context.Context, spec *WorkerSpec, h *Handler, log *slog.Logger) error) int {
	spec, err := LoadSpec(specPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	history, err := OpenHistory(spec.History, spec.Process)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer history.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	h := &Handler{History: history, Spec: spec.Handler, Seed: spec.Seed}
	if spec.Deliveries != "" {
		if h.Counter, err = NewDeliveryCounter(spec.Deliveries); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	log := slog.New(&historyLog{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}), history, logger, nil})
	history.Record("info", "worker", map[string]any{"event": "started", "process": spec.Process, "pid": os.Getpid()})
	if err := run(ctx, spec, h, log); err != nil {
		history.Record("info", "worker", map[string]any{"event": "refused", "process": spec.Process,
			"message": err.Error()})
		return ExitRefused
	}
	history.Record("info", "worker", map[string]any{"event": "exited", "process": spec.Process})
	return 0
}

// historyLog sends every record to the text log (the incarnation's .log file) and WARN and above to the history
// as `log` events, which the harness counts (D8: one warning per LISTEN outage).
type historyLog struct {
	slog.Handler
	history *History
	logger  string
	attrs   []slog.Attr
}

func (l *historyLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var msg strings.Builder
		msg.WriteString(r.Message)
		write := func(a slog.Attr) bool { fmt.Fprintf(&msg, " %s=%v", a.Key, a.Value); return true }
		for _, a := range l.attrs {
			write(a)
		}
		r.Attrs(write)
		level := "WARNING"
		if r.Level >= slog.LevelError {
			level = "ERROR"
		}
		l.history.Record("info", "log", map[string]any{"level": level, "logger": l.logger, "message": msg.String()})
	}
	return l.Handler.Handle(ctx, r)
}

func (l *historyLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &historyLog{l.Handler.WithAttrs(attrs), l.history, l.logger, append(append([]slog.Attr{}, l.attrs...), attrs...)}
}

func (l *historyLog) WithGroup(name string) slog.Handler {
	return &historyLog{l.Handler.WithGroup(name), l.history, l.logger, l.attrs}
}
