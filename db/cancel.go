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
//
// The operator's request names the run as GetRun does: its own run of the
// id, else the one tenant's; a request for an id with no run applies to
// the operator's run of that id to come (a tenant's is cancelled through
// ForTenant).
func (d *DB) CancelRun(ctx context.Context, runID string) (bool, error) {
	key, err := d.operatorKey(ctx, runID)
	if err != nil {
		return false, err
	}
	return d.cancelRun(ctx, key)
}

// cancelRun is CancelRun of the run of key. A request is recorded by key,
// so it applies only to that tenant's run of the id (engine.RunKey): a
// tenant's cancel-before-start of an id never touches another tenant's run.
func (d *DB) cancelRun(ctx context.Context, key string) (bool, error) {
	runID := idOf(key)
	// The request is committed before the run is looked at: any worker that
	// starts the run from now on finds it (see the package doc).
	var inserted bool
	err := d.pool.QueryRow(ctx, sqlInsertCancel, key).Scan(&inserted)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	tag, err := d.pool.Exec(ctx, sqlCancelRun, key)
	if err != nil {
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}

	var status run.Status
	err = d.pool.QueryRow(ctx, sqlRunStatus, key).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return true, nil // not submitted yet: the request waits for it
	case err != nil:
		return false, fmt.Errorf("kern: cancel run %q: %w", runID, err)
	case status == run.StatusCompleted || status == run.StatusError:
		if inserted {
			if _, err := d.pool.Exec(ctx, sqlDeleteCancel, key); err != nil {
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
