package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
)

// OutboxDrain is one pass over the completion outbox of some agents; see
// DrainOutbox.
type OutboxDrain struct {
	Agents []string
	// Complete: the drainer calls OnComplete, so completion rows become
	// kern_complete jobs. Without it, completion rows are left to a worker
	// that does for DropAfter, and then deleted.
	Complete  bool
	DropAfter time.Duration
	Limit     int // rows of each kind per pass; default 500
	// WebhookMaxAttempts overrides engine.WebhookMaxAttempts when positive.
	WebhookMaxAttempts int
}

// OutboxResult says what a pass did.
type OutboxResult struct {
	Completions, Webhooks, Dropped int
}

// DrainOutbox moves the outbox rows of p.Agents into River jobs: each
// completion row (for a drainer with OnComplete) a kern_complete job, each
// webhook row a kern_webhook job, on the agent's queues. The rows are
// deleted in the transaction that inserts the jobs, so a row is either
// still in the outbox or its job exists: nothing is lost across crashes.
// Only kern's own packages can call it (engine.Key).
func (d *DB) DrainOutbox(ctx context.Context, _ engine.Key, p OutboxDrain) (OutboxResult, error) {
	var res OutboxResult
	if p.Limit <= 0 {
		p.Limit = 500
	}
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("kern: drain outbox: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, sqlDrainOutbox, p.Agents, p.Complete, p.DropAfter.Seconds(), p.Limit)
	if err != nil {
		return res, fmt.Errorf("kern: drain outbox: %w", err)
	}
	var params []river.InsertManyParams
	var runID, agentName, kind string
	_, err = pgx.ForEachRow(rows, []any{&runID, &agentName, &kind}, func() error {
		switch {
		case kind == "webhook":
			args := engine.WebhookJobArgs{RunID: runID, AgentName: agentName}
			var opts *river.InsertOpts
			if p.WebhookMaxAttempts > 0 {
				o := args.InsertOpts()
				o.MaxAttempts = p.WebhookMaxAttempts
				opts = &o
			}
			params = append(params, river.InsertManyParams{Args: args, InsertOpts: opts})
			res.Webhooks++
		case p.Complete:
			params = append(params, river.InsertManyParams{Args: engine.CompleteJobArgs{RunID: runID, AgentName: agentName}})
			res.Completions++
		default:
			res.Dropped++
		}
		return nil
	})
	if err != nil {
		return OutboxResult{}, fmt.Errorf("kern: drain outbox: %w", err)
	}
	if len(params) > 0 {
		if _, err := d.river.InsertManyTx(ctx, tx, params); err != nil {
			return OutboxResult{}, fmt.Errorf("kern: drain outbox: insert jobs: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return OutboxResult{}, fmt.Errorf("kern: drain outbox: %w", err)
	}
	return res, nil
}

// WebhookURL is the webhook URL of a run, "" when it has none or is gone.
func (d *DB) WebhookURL(ctx context.Context, _ engine.Key, runID string) (string, error) {
	var url *string
	err := d.pool.QueryRow(ctx, sqlWebhookTarget, runID).Scan(&url)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("kern: webhook of run %q: %w", runID, err)
	case url == nil:
		return "", nil
	}
	return *url, nil
}

// RecordWebhook writes the outcome of a delivery attempt on the run:
// status "pending", "delivered" or "failed", the attempts made, the last
// error. A run that is gone is not an error.
func (d *DB) RecordWebhook(ctx context.Context, _ engine.Key, runID, status string, attempts int, lastError string) error {
	if _, err := d.pool.Exec(ctx, sqlRecordWebhook, runID, status, attempts, lastError); err != nil {
		return fmt.Errorf("kern: record webhook of run %q: %w", runID, err)
	}
	return nil
}
