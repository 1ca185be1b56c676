package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// runRow mirrors runColumns, in order.
type runRow struct {
	ID           string
	SessionID    string
	AgentName    string
	Name         string
	Status       string
	Input        string
	Content      string
	Error        string
	Metadata     map[string]any
	Attempt      int
	TimeoutMs    int64
	InputTokens  int
	OutputTokens int
	TotalTokens  int
	TTFTUs       int64
	DurationUs   int64
	ModelTurns   int
	ToolCalls    int
	CreatedAt    time.Time
	StartedAt    *time.Time
	FinishedAt   *time.Time
	WaitingCalls []waitCall
	WaitTimeout  int64                // ms
	Webhook      *run.WebhookDelivery // runWebhookColumn: nil without a webhook
	TenantID     string
	ParentKey    string // "" for a top-level run
}

func (r *runRow) output() *run.Output {
	return &run.Output{
		RunID:     engine.RunID(r.ID),
		SessionID: r.SessionID,
		AgentName: r.AgentName,
		Name:      r.Name,
		Status:    run.Status(r.Status),
		Input:     r.Input,
		Content:   r.Content,
		Error:     r.Error,
		Metadata:  r.Metadata,
		Metrics: run.Metrics{
			InputTokens:      r.InputTokens,
			OutputTokens:     r.OutputTokens,
			TotalTokens:      r.TotalTokens,
			TimeToFirstToken: time.Duration(r.TTFTUs) * time.Microsecond,
			Duration:         time.Duration(r.DurationUs) * time.Microsecond,
			ModelTurns:       r.ModelTurns,
			ToolCalls:        r.ToolCalls,
		},
		Attempt:     r.Attempt,
		Timeout:     time.Duration(r.TimeoutMs) * time.Millisecond,
		CreatedAt:   r.CreatedAt,
		StartedAt:   r.StartedAt,
		FinishedAt:  r.FinishedAt,
		Waiting:     waitingCalls(r.WaitingCalls),
		WaitTimeout: time.Duration(r.WaitTimeout) * time.Millisecond,
		Webhook:     r.Webhook,
		TenantID:    r.TenantID,
		ParentRunID: engine.RunID(r.ParentKey), // a child is in its parent's tenant: the id is all there is to say
	}
}

func waitingCalls(w []waitCall) []run.ToolCall {
	if len(w) == 0 {
		return nil
	}
	out := make([]run.ToolCall, len(w))
	for i, c := range w {
		out[i] = run.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments}
	}
	return out
}

// collectRun reads at most one run; no row yields run.ErrNotFound.
func collectRun(rows pgx.Rows) (*runRow, error) {
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByPos[runRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, run.ErrNotFound
	}
	return r, err
}

// GetRun reads a run. An unknown id yields run.ErrNotFound; a malformed
// one (see run.ValidateID) run.ErrInvalidArgument. The operator reads any
// tenant's run of the id; where several tenants have one (and the operator
// none), it is run.ErrInvalidArgument: read it through ForTenant.
func (d *DB) GetRun(ctx context.Context, runID string) (*run.Output, error) {
	if err := run.ValidateID(runID); err != nil {
		return nil, err
	}
	// The operator's own run is read in one statement; only an id it has
	// no run of is looked for among the tenants'.
	out, err := d.readRun(ctx, runID, sqlGetRun, runID)
	if !errors.Is(err, run.ErrNotFound) {
		return out, err
	}
	key, kerr := d.operatorKey(ctx, runID)
	if kerr != nil {
		return nil, kerr
	}
	if key == runID {
		return nil, err
	}
	return d.getByKey(ctx, key)
}

// getByKey reads the run of key.
func (d *DB) getByKey(ctx context.Context, key string) (*run.Output, error) {
	return d.readRun(ctx, idOf(key), sqlGetRun, key)
}

// readRun reads the one run query selects (runReadColumns), or
// run.ErrNotFound.
func (d *DB) readRun(ctx context.Context, runID, query string, args ...any) (*run.Output, error) {
	rows, err := d.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("kern: get run %q: %w", runID, err)
	}
	r, err := collectRun(rows)
	if err != nil {
		return nil, fmt.Errorf("kern: get run %q: %w", runID, err)
	}
	return r.output(), nil
}
