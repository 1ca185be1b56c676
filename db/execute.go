package db

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// engineDB is the executing worker's side of a DB (engine.Store): the
// statements of a run's execution. It is not on DB's method set, so an
// application never sees them; package agent gets it through Engine.
type engineDB struct {
	*DB
	worker string // the worker whose claims these are (ForWorker); "" for foreground runs
}

var _ engine.Store = engineDB{}

// Engine returns the executing side of the database, for kern's own
// packages (the worker and foreground runs of package agent). Applications
// cannot call it: its key type is internal to kern.
func (d *DB) Engine(engine.Key) engine.Store { return engineDB{DB: d} }

// StartRun implements engine.Store: it claims a pending run for its next
// execution, or moves it straight to cancelled when a cancel request is on
// file.
func (d engineDB) StartRun(ctx context.Context, runID string, jobID *int64) (*engine.Claim, error) {
	return d.StartKeyedRun(ctx, runID, jobID, 0)
}

// StartKeyedRun implements engine.Store: StartRun under a per-key limit
// (see sqlStartRuns). A refused claim costs one more statement, which tells
// a run its key holds back (engine.ErrKeyBusy) from one that is not
// startable.
func (d engineDB) StartKeyedRun(ctx context.Context, runID string, jobID *int64, maxRunsPerKey int) (*engine.Claim, error) {
	if maxRunsPerKey < 0 {
		return nil, fmt.Errorf("kern: %w: max runs per key %d is negative", run.ErrInvalidArgument, maxRunsPerKey)
	}
	r, err := d.exec.start.do(ctx, startItem{id: runID, jobID: jobID, maxRunsPerKey: maxRunsPerKey, worker: d.worker})
	if err != nil {
		return nil, fmt.Errorf("kern: start run %q: %w", idOf(runID), err)
	}
	if r == nil {
		if err := checkKey(runID); err != nil {
			return nil, err
		}
		var keyBusy bool
		err := d.pool.QueryRow(ctx, sqlClaimRefused, runID, jobID).Scan(&keyBusy)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, fmt.Errorf("kern: get run %q: %w", idOf(runID), run.ErrNotFound)
		case err != nil:
			return nil, fmt.Errorf("kern: start run %q: %w", idOf(runID), err)
		case keyBusy && maxRunsPerKey > 0:
			return nil, fmt.Errorf("kern: start run %q: %w", idOf(runID), engine.ErrKeyBusy)
		}
		return nil, fmt.Errorf("kern: start run %q: %w", idOf(runID), run.ErrNotRunning)
	}
	return &engine.Claim{Run: r.output(), Fence: engine.Fence{RunID: r.ID, Execution: r.Execution},
		EventSeq: r.EventSeq, TranscriptSeq: r.TranscriptSeq}, nil
}

// ReadRun implements engine.Store.
func (d engineDB) ReadRun(ctx context.Context, key string) (*run.Output, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return d.getByKey(ctx, key)
}

// AppendContent implements engine.Store. It returns run.ErrNotRunning once
// the execution no longer owns the run.
//
// A chunk is written at most once: it applies only right after event
// seq-1. When it did not apply, a read-back tells a chunk already in the
// run (an earlier try whose reply was lost: nil) from a run this execution
// lost (run.ErrNotRunning). The read-back is a new statement, so it also
// sees an earlier try that committed while this one waited for the row.
func (d engineDB) AppendContent(ctx context.Context, f engine.Fence, seq int64, delta string) error {
	applied, err := d.exec.append.do(ctx, appendItem{f, seq, storable(delta)})
	if err == nil && !applied {
		err = d.pool.QueryRow(ctx, sqlAppendApplied, f.RunID, f.Execution, seq).Scan(&applied)
	}
	return fenced("append content to", f.RunID)(applied, err)
}

// FinishRun implements engine.Store: it writes a terminal status if the
// execution still owns the running run, and returns run.ErrNotRunning when
// it does not (a cancel or a later execution won): then nothing was written.
func (d engineDB) FinishRun(ctx context.Context, f engine.Fence, fin engine.Finish) error {
	if !fin.Status.Terminal() {
		return fmt.Errorf("kern: %w: finish run with non-terminal status %q", run.ErrInvalidArgument, fin.Status)
	}
	fin.Tail, fin.Error = storable(fin.Tail), storable(fin.Error)
	return fenced("finish", f.RunID)(d.exec.finish.do(ctx, finishItem{f, fin}))
}

// ReleaseRun implements engine.Store.
func (d engineDB) ReleaseRun(ctx context.Context, f engine.Fence) error {
	return d.execFenced(ctx, "release", f.RunID, sqlReleaseRun, f.RunID, f.Execution)
}

// RetryRun implements engine.Store.
func (d engineDB) RetryRun(ctx context.Context, f engine.Fence, errMsg string, delay time.Duration) error {
	return d.execFenced(ctx, "retry", f.RunID, sqlRetryRun, f.RunID, f.Execution, storable(errMsg), delay.Milliseconds())
}

// Heartbeat implements engine.Store. run.ErrNotRunning means the execution
// lost the run: it was cancelled, or rescued after a stall, and must stop.
func (d engineDB) Heartbeat(ctx context.Context, f engine.Fence) error {
	return fenced("heartbeat", f.RunID)(d.exec.heartbeat.do(ctx, f))
}

// SubscribeCancel implements engine.Store.
func (d engineDB) SubscribeCancel(runID string) engine.Subscription {
	return d.listener.subscribe(topic{channelCancel, runID})
}

// SubscribeDone implements engine.Store.
func (d engineDB) SubscribeDone(runID string) engine.Subscription {
	return d.subscribeDone(runID)
}

// execFenced runs a statement fenced by status and execution; no row
// affected means the execution no longer owns the run.
func (d engineDB) execFenced(ctx context.Context, what, runID, sql string, args ...any) error {
	tag, err := d.pool.Exec(ctx, sql, args...)
	return fenced(what, runID)(err == nil && tag.RowsAffected() > 0, err)
}

// fenced turns a fenced write's outcome (did it apply, or did it fail) into
// the error its caller returns.
func fenced(what, runID string) func(applied bool, err error) error {
	return func(applied bool, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("kern: %s run %q: %w", what, idOf(runID), err)
		case !applied:
			return fmt.Errorf("kern: %s run %q: %w", what, idOf(runID), run.ErrNotRunning)
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
