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
// then it changes nothing.
//
// A running run's worker is told through LISTEN/NOTIFY and interrupts the
// model call at once; the content streamed so far is kept.
func (d *DB) CancelRun(ctx context.Context, runID string) (bool, error) {
	return d.cancelRun(ctx, runID, "")
}

// cancelRun is CancelRun as tenant asks it ("" for the operator, whose
// request applies to the run of that id whoever owns it). A tenant's
// request applies only to a run of that tenant: another tenant's run reads
// as no run yet, and the request stays on file for a run of this tenant
// that may come with the id, which it alone can cancel (migration 012).
func (d *DB) cancelRun(ctx context.Context, runID, tenant string) (bool, error) {
	if err := run.ValidateID(runID); err != nil {
		return false, err
	}
	// The request is committed before the run is looked at: any worker that
	// starts the run from now on finds it (see the package doc).
	var inserted bool
	err := d.pool.QueryRow(ctx, sqlInsertCancel, runID, tenant).Scan(&inserted)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	tag, err := d.pool.Exec(ctx, sqlCancelRun, runID, tenant)
	if err != nil {
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}

	var status run.Status
	err = d.pool.QueryRow(ctx, sqlRunStatus, runID, tenant).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return true, nil // not submitted yet: the request waits for it
	case err != nil:
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	case status == run.StatusCompleted || status == run.StatusError:
		if inserted {
			if _, err := d.pool.Exec(ctx, sqlDeleteCancel, runID, tenant); err != nil {
				return false, fmt.Errorf("kern: cancel run %q: withdraw request: %w", runID, err)
			}
		}
		return false, nil
	default:
		// cancelled already, or pending again after a concurrent submit:
		// the committed request ends it as cancelled either way.
		return true, nil
	}
}
