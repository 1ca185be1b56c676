package db

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	rows, err := d.pool.Query(ctx, sqlStartRun, runID, jobID)
	if err != nil {
		return nil, fmt.Errorf("kern: start run %q: %w", runID, err)
	}
	r, err := collectRun(rows)
	if errors.Is(err, run.ErrNotFound) {
		if _, getErr := d.GetRun(ctx, runID); getErr != nil {
			return nil, getErr
		}
		return nil, fmt.Errorf("kern: start run %q: %w", runID, run.ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("kern: start run %q: %w", runID, err)
	}
	return r.output(), nil
}

// AppendContent persists a flushed chunk of the content being streamed.
// It returns run.ErrNotRunning once the attempt no longer owns the run.
func (d *DB) AppendContent(ctx context.Context, runID string, attempt int, delta string) error {
	return d.execFenced(ctx, "append content to", runID, sqlAppendContent, runID, attempt, delta)
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
	m := f.Metrics
	return d.execFenced(ctx, "finish", runID, sqlFinishRun, runID, attempt, string(f.Status), f.Tail, f.Error,
		m.InputTokens, m.OutputTokens, m.TotalTokens, m.TimeToFirstToken.Microseconds(), m.Duration.Microseconds())
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
	return d.execFenced(ctx, "retry", runID, sqlRetryRun, runID, attempt, errMsg, delay.Milliseconds())
}

// Heartbeat records that the attempt is alive. run.ErrNotRunning means it
// lost the run: it was cancelled, or rescued after a stall, and must stop.
func (d *DB) Heartbeat(ctx context.Context, runID string, attempt int) error {
	return d.execFenced(ctx, "heartbeat", runID, sqlHeartbeat, runID, attempt)
}

// execFenced runs a statement fenced by status and attempt; no row affected
// means the attempt no longer owns the run.
func (d *DB) execFenced(ctx context.Context, what, runID, sql string, args ...any) error {
	tag, err := d.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("kern: %s run %q: %w", what, runID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("kern: %s run %q: %w", what, runID, run.ErrNotRunning)
	}
	return nil
}
