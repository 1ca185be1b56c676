package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
)

// DrainOutbox moves the outbox rows of p.Agents into River jobs: each
// completion row (for a drainer with OnComplete) a kern_complete job, each
// webhook row a kern_webhook job, on the agent's queues. The rows are
// deleted in the transaction that inserts the jobs, so a row is either
// still in the outbox or its job exists: nothing is lost across crashes.
// It implements engine.Store: only kern's worker calls it.
func (d engineDB) DrainOutbox(ctx context.Context, p engine.OutboxDrain) (engine.OutboxResult, error) {
	var res engine.OutboxResult
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
		return engine.OutboxResult{}, fmt.Errorf("kern: drain outbox: %w", err)
	}
	if len(params) > 0 {
		if _, err := d.river.InsertManyTx(ctx, tx, params); err != nil {
			return engine.OutboxResult{}, fmt.Errorf("kern: drain outbox: insert jobs: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return engine.OutboxResult{}, fmt.Errorf("kern: drain outbox: %w", err)
	}
	return res, nil
}

// WebhookURL implements engine.Store: the webhook URL of a run, "" when it
// has none or is gone.
func (d engineDB) WebhookURL(ctx context.Context, runID string) (string, error) {
	var url *string
	err := d.pool.QueryRow(ctx, sqlWebhookTarget, runID).Scan(&url)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("kern: webhook of run %q: %w", idOf(runID), err)
	case url == nil:
		return "", nil
	}
	return *url, nil
}

// RecordWebhook implements engine.Store: the outcome of a delivery attempt
// on the run: status "pending", "delivered" or "failed", the attempts made,
// the last error. A run that is gone is not an error.
func (d engineDB) RecordWebhook(ctx context.Context, runID, status string, attempts int, lastError string) error {
	if _, err := d.pool.Exec(ctx, sqlRecordWebhook, runID, status, attempts, lastError); err != nil {
		return fmt.Errorf("kern: record webhook of run %q: %w", idOf(runID), err)
	}
	return nil
}
