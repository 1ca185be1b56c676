package agent

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

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
		// The key's run may be foreground or background, running or done:
		// it is returned as it is, never executed a second time.
		IdempotencyKey: cfg.idemKey,
	})
	if err != nil || cfg.background || out.Status != run.StatusPending || out.Attempt > 0 {
		return out, err
	}

	if cfg.onEvent != nil {
		stopEvents := a.forwardEvents(ctx, out.RunID, cfg.onEvent)
		defer stopEvents()
	}
	if err := a.executeForeground(ctx, out.RunID); err != nil {
		return nil, err
	}
	return a.DB.GetRun(context.WithoutCancel(ctx), out.RunID)
}

// executeForeground runs the run's attempts in the caller's goroutine,
// waiting out retry delays (a cancel during one ends the wait at once).
func (a *Agent) executeForeground(ctx context.Context, runID string) error {
	exec := newExecutor(a.DB, slog.Default())
	for {
		err := exec.execute(ctx, a, runID, nil)
		var retry *retryLater
		if !errors.As(err, &retry) {
			return err
		}
		done := exec.store.SubscribeDone(runID)
		select {
		case <-time.After(retry.delay):
		case <-done.C(): // cancelled while waiting: the next start finds out
		case <-ctx.Done():
		}
		done.Close()
		if ctx.Err() != nil {
			// Nobody is left to run it: end it as the caller's going away.
			_, err := a.DB.CancelRun(context.WithoutCancel(ctx), runID)
			return err
		}
	}
}

// forwardEvents follows the run's events into fn until the terminal event.
// The returned func waits for that, bounded, so every event of the run has
// been delivered when Run returns.
func (a *Agent) forwardEvents(ctx context.Context, runID string, fn func(run.Event)) (wait func()) {
	followCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range a.DB.Events(followCtx, runID, 0) {
			if err != nil {
				return
			}
			fn(ev)
		}
	}()
	return func() {
		timer := time.AfterFunc(finalWriteTimeout, cancel)
		<-done
		timer.Stop()
		cancel()
	}
}

// Events replays the run's events after afterSeq and follows it live until
// its terminal event; see db.DB.Events.
func (a *Agent) Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error] {
	if err := a.requireDB(); err != nil {
		return func(yield func(run.Event, error) bool) { yield(run.Event{}, err) }
	}
	return a.DB.Events(ctx, runID, afterSeq)
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
