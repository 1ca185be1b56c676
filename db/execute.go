package db

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kern-go/kern/run"
)

// The methods in this file are the executing worker's side of a run. They
// are exported for package agent; applications have no use for them.

// StartRun claims a pending run for its next attempt. jobID is the River
// job executing it (nil for a foreground run); only the run's current job
// may start it. It returns the run as it now is: running (Attempt is this
// execution's attempt, which fences all its writes), or cancelled when a
// cancel request was on file — then the model must not be called. It
// returns run.ErrNotRunning when the run is not startable (terminal, running
// elsewhere, or not this job's), and run.ErrNotFound for no run.
func (d *DB) StartRun(ctx context.Context, runID string, jobID *int64) (*run.Output, error) {
	r, err := d.exec.start.do(ctx, startItem{id: runID, jobID: jobID})
	if err != nil {
		return nil, fmt.Errorf("kern: start run %q: %w", runID, err)
	}
	if r == nil {
		if _, getErr := d.GetRun(ctx, runID); getErr != nil {
			return nil, getErr
		}
		return nil, fmt.Errorf("kern: start run %q: %w", runID, run.ErrNotRunning)
	}
	return r.output(), nil
}

// AppendContent persists a flushed chunk of the content being streamed.
// It returns run.ErrNotRunning once the attempt no longer owns the run.
func (d *DB) AppendContent(ctx context.Context, runID string, attempt int, delta string) error {
	return fenced("append content to", runID)(d.exec.append.do(ctx, appendItem{fence{runID, attempt}, storable(delta)}))
}

// Finish is the end of one execution.
type Finish struct {
	Status  run.Status // completed, error or cancelled
	Tail    string     // content not flushed yet, appended in the same statement
	Error   string     // for StatusError
	Metrics run.Metrics
}

// FinishRun writes a terminal status if the attempt still owns the running
// run. It returns run.ErrNotRunning when it does not (a cancel or a later
// attempt won): then nothing was written.
func (d *DB) FinishRun(ctx context.Context, runID string, attempt int, f Finish) error {
	if !f.Status.Terminal() {
		return fmt.Errorf("%w: finish run with non-terminal status %q", run.ErrInvalidArgument, f.Status)
	}
	f.Tail, f.Error = storable(f.Tail), storable(f.Error)
	return fenced("finish", runID)(d.exec.finish.do(ctx, finishItem{fence{runID, attempt}, f}))
}

// ReleaseRun hands a running run back to pending, for a worker that stops
// before the run is done; another worker takes it up. The attempt does not
// count against the run's attempts.
func (d *DB) ReleaseRun(ctx context.Context, runID string, attempt int) error {
	return d.execFenced(ctx, "release", runID, sqlReleaseRun, runID, attempt)
}

// RetryRun puts a failed attempt back to pending, with errMsg visible until
// the next attempt starts and a run.retrying event saying when it will.
func (d *DB) RetryRun(ctx context.Context, runID string, attempt int, errMsg string, delay time.Duration) error {
	return d.execFenced(ctx, "retry", runID, sqlRetryRun, runID, attempt, storable(errMsg), delay.Milliseconds())
}

// Heartbeat records that the attempt is alive. run.ErrNotRunning means it
// lost the run: it was cancelled, or rescued after a stall, and must stop.
func (d *DB) Heartbeat(ctx context.Context, runID string, attempt int) error {
	return fenced("heartbeat", runID)(d.exec.heartbeat.do(ctx, fence{runID, attempt}))
}

// execFenced runs a statement fenced by status and attempt; no row affected
// means the attempt no longer owns the run.
func (d *DB) execFenced(ctx context.Context, what, runID, sql string, args ...any) error {
	tag, err := d.pool.Exec(ctx, sql, args...)
	return fenced(what, runID)(err == nil && tag.RowsAffected() > 0, err)
}

// fenced turns a fenced write's outcome (did it apply, or did it fail) into
// the error its caller returns.
func fenced(what, runID string) func(applied bool, err error) error {
	return func(applied bool, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("kern: %s run %q: %w", what, runID, err)
		case !applied:
			return fmt.Errorf("kern: %s run %q: %w", what, runID, run.ErrNotRunning)
		}
		return nil
	}
}

// storable makes text from a model storable in Postgres text, which holds
// neither NUL nor invalid UTF-8: both become U+FFFD. Refusing it, as submit
// refuses such input, would fail the run for a model's stray byte.
func storable(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
