package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/kern-go/kern/run"
)

// The methods in this file are the executing worker's side of a run. They
// are exported for package agent; applications have no use for them.

// StartRun claims a run for an attempt (1 for the first execution). It
// returns the run as it now is: running, or cancelled when a cancel request
// was on file — then the model must not be called. It returns
// run.ErrNotRunning when the run is not startable: terminal already, or
// owned by an attempt at least as new; and run.ErrNotFound for no run.
func (d *DB) StartRun(ctx context.Context, runID string, attempt int) (*run.Output, error) {
	rows, err := d.pool.Query(ctx, sqlStartRun, runID, attempt)
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
	tag, err := d.pool.Exec(ctx, sqlAppendContent, runID, attempt, delta)
	if err != nil {
		return fmt.Errorf("kern: append content to run %q: %w", runID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("kern: append content to run %q: %w", runID, run.ErrNotRunning)
	}
	return nil
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
	tag, err := d.pool.Exec(ctx, sqlFinishRun, runID, attempt, string(f.Status), f.Tail, f.Error,
		m.InputTokens, m.OutputTokens, m.TotalTokens, m.TimeToFirstToken.Microseconds(), m.Duration.Microseconds())
	if err != nil {
		return fmt.Errorf("kern: finish run %q: %w", runID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("kern: finish run %q: %w", runID, run.ErrNotRunning)
	}
	return nil
}

// ReleaseRun hands a running run back to pending, for a worker that stops
// before the run is done; another worker takes it up.
func (d *DB) ReleaseRun(ctx context.Context, runID string, attempt int) error {
	if _, err := d.pool.Exec(ctx, sqlReleaseRun, runID, attempt); err != nil {
		return fmt.Errorf("kern: release run %q: %w", runID, err)
	}
	return nil
}
