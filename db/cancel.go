package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/run"
)

// CancelRun asks for a run to be cancelled. It answers true when the run
// will end cancelled: it was pending or running (and is cancelled now), it
// was already cancelled (CancelRun is idempotent), or it does not exist yet
// (cancel-before-start: a run submitted later with this id never reaches the
// model). It answers false when the run had already completed or failed;
// then it changes nothing of that run.
//
// It also cancels every live run (pending, running, waiting) below the
// run, at any depth (SubmitParams.ParentRunID), whatever the run itself
// was: each ends cancelled as the run would. A run below it that had
// finished is left as it is. The answer is about the run itself.
//
// A running run's worker is told through LISTEN/NOTIFY and interrupts the
// model call at once; the content streamed so far is kept.
//
// The operator's request names the run as GetRun does: its own run of the
// id, else the one tenant's; a request for an id with no run applies to
// the operator's run of that id to come (a tenant's is cancelled through
// ForTenant).
func (d *DB) CancelRun(ctx context.Context, runID string) (bool, error) {
	res, err := d.CancelRunResult(ctx, runID)
	return err == nil && res.Outcome != CancelAlreadyFinished, err
}

// CancelOutcome is what a cancel request did (CancelResult).
type CancelOutcome int

const (
	// CancelRecorded: there is no run of that id yet; the request waits for
	// one submitted with it, which will end cancelled.
	CancelRecorded CancelOutcome = iota + 1
	// CancelDone: the run is cancelled now, or had been already, or (pending
	// again after a concurrent submit) will end cancelled by the request.
	CancelDone
	// CancelAlreadyFinished: the run had completed or failed; nothing
	// changed.
	CancelAlreadyFinished
)

// CancelResult is what CancelRunResult did: its outcome, and the run's
// status after it ("" when there is no run yet).
type CancelResult struct {
	Outcome CancelOutcome
	Status  run.Status
}

// CancelRunResult is CancelRun, telling which of its cases it was, so that
// a person is told what happened (kern runs cancel) rather than a bool.
func (d *DB) CancelRunResult(ctx context.Context, runID string) (CancelResult, error) {
	key, err := d.operatorKey(ctx, runID)
	if err != nil {
		return CancelResult{}, err
	}
	return d.cancelRun(ctx, key)
}

// CancelRunResult is DB.CancelRunResult as this tenant asks it: another
// tenant's run of the id is another run, left untouched.
func (t *TenantDB) CancelRunResult(ctx context.Context, runID string) (CancelResult, error) {
	key, err := t.key(runID)
	if err != nil {
		return CancelResult{}, err
	}
	return t.d.cancelRun(ctx, key)
}

// cancelRun is CancelRunResult of the run of key, and cancels every live
// run below it too (see the package doc). A request is recorded by key, so
// it applies only to that tenant's run of the id (engine.RunKey): a
// tenant's cancel-before-start of an id never touches another tenant's
// run, and its tree is its own (a child is in its parent's tenant).
func (d *DB) cancelRun(ctx context.Context, key string) (CancelResult, error) {
	runID, fail := idOf(key), CancelResult{}
	// The requests are committed before any run is looked at: any worker
	// that starts one of them from now on finds its request.
	var inserted bool
	var below []string
	if err := d.pool.QueryRow(ctx, sqlInsertTreeCancel, key, true).Scan(&inserted, &below); err != nil {
		return fail, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	res, err := d.cancelOne(ctx, key, inserted)
	if err != nil {
		return fail, err
	}
	// The tree is walked again, now that the requests are committed: a
	// child whose submit committed after the first walk read the tree,
	// and whose own check (cancelIfBelowCancelled) read before the
	// requests committed, is found here (see the package doc).
	// Its list, not the first's, is what is left live below the run.
	if err := d.pool.QueryRow(ctx, sqlInsertTreeCancel, key, false).Scan(new(bool), &below); err != nil {
		return fail, fmt.Errorf("kern: cancel run %q: the runs below it: %w", runID, err)
	}
	// The run's own outcome is decided; the runs below it end cancelled
	// whatever it was, as their requests are committed. A failure here
	// leaves some of them to their requests: a later start ends them
	// cancelled, a running one's worker was told; CancelRun again finishes
	// the job, being idempotent.
	for _, k := range below {
		if _, err := d.pool.Exec(ctx, sqlCancelRun, k); err != nil {
			return fail, fmt.Errorf("kern: cancel run %q: the run %q below it: %w", runID, idOf(k), err)
		}
	}
	return res, nil
}

// cancelOne is the second step of a cancel for the run of key itself,
// whose request is committed (inserted: by this cancel, so it withdraws it
// if the run had already finished).
func (d *DB) cancelOne(ctx context.Context, key string, inserted bool) (CancelResult, error) {
	runID, fail := idOf(key), CancelResult{}
	tag, err := d.pool.Exec(ctx, sqlCancelRun, key)
	if err != nil {
		return fail, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	if tag.RowsAffected() == 1 {
		return CancelResult{CancelDone, run.StatusCancelled}, nil
	}

	var status run.Status
	err = d.pool.QueryRow(ctx, sqlRunStatus, key).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return CancelResult{Outcome: CancelRecorded}, nil // not submitted yet: the request waits for it
	case err != nil:
		return fail, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	case status == run.StatusCompleted || status == run.StatusError:
		if inserted {
			if _, err := d.pool.Exec(ctx, sqlDeleteCancel, key); err != nil {
				return fail, fmt.Errorf("kern: cancel run %q: withdraw request: %w", runID, err)
			}
		}
		return CancelResult{CancelAlreadyFinished, status}, nil
	default:
		// cancelled already, or pending again after a concurrent submit:
		// the committed request ends it as cancelled either way.
		return CancelResult{CancelDone, run.StatusCancelled}, nil
	}
}
