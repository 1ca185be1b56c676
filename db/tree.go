package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// MaxRunDepth is how deep a tree of runs may grow: a top-level run has
// depth 0, its children 1, and a submit whose run would be deeper than
// MaxRunDepth is run.ErrInvalidArgument. It stops an agent that keeps
// starting itself as a sub-agent with an error instead of an unbounded
// tree, and bounds every walk of a tree (CancelRun's).
const MaxRunDepth = 8

// rowQuerier is what parentOf reads through: the pool, or the caller's
// transaction for a submit in it (where the parent may be a run the same
// transaction submitted).
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// parentOf resolves p.ParentRunID to the parent's key and the new run's
// depth: the parent is the run of that id in the submit's own tenant
// (p.TenantID), so a child is always in its parent's tenant and a tenant
// can never name another tenant's run. The operator names its own run, or
// sets TenantID to submit a tenant's child. No parent of that id is
// run.ErrNotFound, too deep run.ErrInvalidArgument; either way nothing is
// written. A top-level run ("" ParentRunID) is ("", 0).
//
// The parent is read before the insert, not in it: a parent never changes
// its depth, and one deleted in between (retention deletes finished runs
// only) leaves a child whose parent is gone, as retention may leave any
// child later anyway (migrations/022_run_tree.sql).
func parentOf(ctx context.Context, q rowQuerier, p *SubmitParams) (key string, depth int, err error) {
	if p.ParentRunID == "" {
		return "", 0, nil
	}
	if err := run.ValidateID(p.ParentRunID); err != nil {
		return "", 0, fmt.Errorf("%w (the parent run id)", err)
	}
	key = engine.RunKey(p.TenantID, p.ParentRunID)
	var parentDepth int
	err = q.QueryRow(ctx, sqlRunDepth, key).Scan(&parentDepth)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", 0, fmt.Errorf("kern: parent run %q: %w", p.ParentRunID, run.ErrNotFound)
	case err != nil:
		return "", 0, fmt.Errorf("kern: parent run %q: %w", p.ParentRunID, err)
	case parentDepth+1 > MaxRunDepth:
		return "", 0, fmt.Errorf("kern: %w: run %q would be at depth %d below its top-level run, more than %d",
			run.ErrInvalidArgument, p.RunID, parentDepth+1, MaxRunDepth)
	}
	return key, parentDepth + 1, nil
}

// childrenKey is the key of the run whose children ListRuns lists: in
// p.TenantID's scope when it names a tenant, else the run the operator
// reads by that id (operatorKey), as GetRun would.
func (d *DB) childrenKey(ctx context.Context, p *run.ListParams) (string, error) {
	if p.TenantID != "" {
		if err := run.ValidateID(p.ParentRunID); err != nil {
			return "", fmt.Errorf("%w (the parent run id)", err)
		}
		return engine.RunKey(p.TenantID, p.ParentRunID), nil
	}
	return d.operatorKey(ctx, p.ParentRunID)
}

// cancelIfBelowCancelled cancels a child run just committed (its key) if
// a run above it has a cancel request: a cancel of an ancestor that walked
// the tree before the child was there. It is the submit's half of the
// argument in the package doc ("Cancel reaches the whole tree below a
// run"): the submit commits the child, then reads the requests; the
// cancel commits the requests, then walks the tree again; so one of the
// two reads sees the other's write.
func (d *DB) cancelIfBelowCancelled(ctx context.Context, key string) error {
	var below bool
	if err := d.pool.QueryRow(ctx, sqlBelowCancelled, key).Scan(&below); err != nil {
		return fmt.Errorf("kern: run %q was submitted; looking for a cancel above it: %w", idOf(key), err)
	}
	if !below {
		return nil
	}
	if _, err := d.cancelRun(ctx, key); err != nil {
		return fmt.Errorf("kern: run %q was submitted below a cancelled run; cancelling it: %w", idOf(key), err)
	}
	return nil
}

// requestIfBelowCancelled is cancelIfBelowCancelled for a child submitted
// in the caller's transaction (tx): kern does not see that commit, so it
// records the child's own cancel request in tx when a run above it has
// one, and the child's start ends it cancelled. A cancel of an ancestor
// that runs while tx is open may miss the child (see the package doc).
func requestIfBelowCancelled(ctx context.Context, tx pgx.Tx, key string) error {
	var below bool
	if err := tx.QueryRow(ctx, sqlBelowCancelled, key).Scan(&below); err != nil {
		return fmt.Errorf("looking for a cancel above run %q: %w", idOf(key), err)
	}
	if !below {
		return nil
	}
	var inserted bool
	var none []string
	if err := tx.QueryRow(ctx, sqlInsertTreeCancel, key, true).Scan(&inserted, &none); err != nil {
		return fmt.Errorf("cancelling run %q below a cancelled run: %w", idOf(key), err)
	}
	return nil
}
