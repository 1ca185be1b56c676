package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// Agent is a named model with instructions. Its Name is how a worker finds
// the agent for a run, so it must be unique per worker and the same in the
// process that submits and the one that works.
type Agent struct {
	Name         string
	Instructions string
	Model        Model
	DB           *db.DB
	Tools        []Tool // function tools the model may call (later release)
	HistoryRuns  int    // the last N finished runs of the session as history (later release)
	MaxSteps     int    // model turns per run, default 10 (later release)
}

func (a *Agent) validate() error {
	switch {
	case a == nil:
		return fmt.Errorf("%w: agent is nil", run.ErrInvalidArgument)
	case a.Name == "":
		return fmt.Errorf("%w: agent has no Name", run.ErrInvalidArgument)
	case a.DB == nil:
		return fmt.Errorf("%w: agent %q has no DB", run.ErrInvalidArgument, a.Name)
	case a.Model == nil:
		return fmt.Errorf("%w: agent %q has no Model", run.ErrInvalidArgument, a.Name)
	}
	return nil
}

// Run starts a run of prompt. With Background(true) it commits the pending
// run and its job in one transaction and returns at once; a worker executes
// it. Without, it executes the run in the calling goroutine and returns it
// terminal; the run is stored exactly as a background run would be, and
// CancelRun from anywhere stops it. If ctx ends first, the run ends
// cancelled.
func (a *Agent) Run(ctx context.Context, prompt string, opts ...RunOption) (*run.Output, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	var cfg runConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.runID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("kern: new run id: %w", err)
		}
		cfg.runID = id.String()
	}

	out, err := a.DB.SubmitRun(ctx, db.SubmitParams{
		RunID:     cfg.runID,
		SessionID: cfg.sessionID,
		AgentName: a.Name,
		Name:      cfg.name,
		Input:     prompt,
		Metadata:  cfg.metadata,
		Timeout:   cfg.timeout,
		Enqueue:   cfg.background,
	})
	if err != nil || cfg.background {
		return out, err
	}

	exec := &executor{
		db:             a.DB,
		logger:         slog.Default(),
		defaultTimeout: defaultTimeout,
		flushEvery:     defaultFlushEvery,
		flushBytes:     defaultFlushBytes,
	}
	if err := exec.execute(ctx, a, out.RunID, 1); err != nil && !errors.Is(err, errHandedBack) {
		return nil, err
	}
	return a.DB.GetRun(context.WithoutCancel(ctx), out.RunID)
}

// GetRunOutput reads a run: its status, and its content so far.
func (a *Agent) GetRunOutput(ctx context.Context, runID string) (*run.Output, error) {
	if err := a.requireDB(); err != nil {
		return nil, err
	}
	return a.DB.GetRun(ctx, runID)
}

// CancelRun cancels a run; see db.DB.CancelRun for what true and false mean.
func (a *Agent) CancelRun(ctx context.Context, runID string) (bool, error) {
	if err := a.requireDB(); err != nil {
		return false, err
	}
	return a.DB.CancelRun(ctx, runID)
}

// WaitRun blocks until the run is terminal, or ctx ends.
func (a *Agent) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	if err := a.requireDB(); err != nil {
		return nil, err
	}
	return a.DB.WaitRun(ctx, runID)
}

func (a *Agent) requireDB() error {
	if a == nil || a.DB == nil {
		return fmt.Errorf("%w: agent has no DB", run.ErrInvalidArgument)
	}
	return nil
}
