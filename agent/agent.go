package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// Agent is a named model with instructions. Its Name is how a worker finds
// the agent for a run, so it must be unique per worker and the same in the
// process that submits and the one that works.
//
// An Agent keeps the model client it resolves on first use (an OpenAIChat
// or OpenAIResponses without a Client gets one from the environment, once),
// and its compiled OutputSchema, so use it by
// pointer and do not copy it after first use.
type Agent struct {
	Name         string
	Instructions string
	Model        Model
	DB           *db.DB
	// Tools are the functions the model may call, in a loop, until it
	// answers (see Tool). Names must be unique.
	Tools []Tool
	// Handoffs are the agents the model may hand the run over to: each is
	// offered as a tool "transfer_to_<name>". A call of it moves the same
	// run, with its transcript so far, to that agent — its instructions,
	// tools and model — on a worker that serves it (handoff.go).
	Handoffs []*Agent
	// MaxSteps bounds the model turns of a run (default 10): a run whose
	// model still asks for tools in its last turn ends as error "max steps
	// (N) reached", with its transcript kept. Negative is refused.
	MaxSteps int
	// HistoryRuns, for a run submitted WithSessionID, puts the last N
	// finished runs of the same session, agent and tenant before its prompt, as
	// user/assistant messages (0..100; see the package doc for what is
	// replayed). Runs without a session get none.
	HistoryRuns int
	// OutputSchema asks for structured output: the request carries it as a
	// JSON Schema (chat: response_format json_schema; Responses API:
	// text.format), and the final answer must be JSON valid against it. An
	// answer that is not is sent back to the model once with what is wrong;
	// a second invalid answer ends the run as error. A schema that does not
	// compile is refused with run.ErrInvalidArgument.
	OutputSchema map[string]any

	models  modelCache
	schemas schemaCache
}

func (a *Agent) validate() error {
	switch {
	case a == nil:
		return fmt.Errorf("kern: %w: agent is nil", run.ErrInvalidArgument)
	case a.Name == "":
		return fmt.Errorf("kern: %w: agent has no Name", run.ErrInvalidArgument)
	case a.DB == nil:
		return fmt.Errorf("kern: %w: agent %q has no DB", run.ErrInvalidArgument, a.Name)
	}
	return a.validateConfig()
}

// validateConfig refuses what a run of the agent could not honour.
func (a *Agent) validateConfig() error {
	switch {
	case a.Model == nil:
		return fmt.Errorf("kern: %w: agent %q has no Model", run.ErrInvalidArgument, a.Name)
	case a.MaxSteps < 0:
		return fmt.Errorf("kern: %w: agent %q: MaxSteps %d is negative", run.ErrInvalidArgument, a.Name, a.MaxSteps)
	case a.HistoryRuns < 0 || a.HistoryRuns > db.MaxHistoryRuns:
		return fmt.Errorf("kern: %w: agent %q: HistoryRuns %d is not in 0..%d", run.ErrInvalidArgument, a.Name, a.HistoryRuns, db.MaxHistoryRuns)
	}
	if _, err := a.schemas.get(a.Name, a.OutputSchema); err != nil {
		return err // says what and whose already
	}
	if err := a.validateTools(); err != nil {
		return err
	}
	return a.validateHandoffs()
}

// toolName is what OpenAI's API accepts as a function name; other
// providers accept at least these. Refusing others here beats every run
// failing with the provider's 400.
var toolName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validateTools refuses tools the loop could not offer or call.
func (a *Agent) validateTools() error {
	seen := make(map[string]bool, len(a.Tools))
	for i, t := range a.Tools {
		switch {
		case t.Name == "":
			return fmt.Errorf("kern: %w: agent %q: tool %d has no Name", run.ErrInvalidArgument, a.Name, i)
		case !toolName.MatchString(t.Name):
			return fmt.Errorf("kern: %w: agent %q: tool name %q: use letters, digits, '_' and '-', at most 64", run.ErrInvalidArgument, a.Name, t.Name)
		case seen[t.Name]:
			return fmt.Errorf("kern: %w: agent %q: two tools named %q", run.ErrInvalidArgument, a.Name, t.Name)
		case t.External && t.NeedsApproval:
			return fmt.Errorf("kern: %w: agent %q: tool %q is External and NeedsApproval; an External tool's result is the answer, choose one", run.ErrInvalidArgument, a.Name, t.Name)
		case t.External && t.Call != nil:
			return fmt.Errorf("kern: %w: agent %q: tool %q is External but has a Call; kern never calls an External tool", run.ErrInvalidArgument, a.Name, t.Name)
		case t.Call == nil && !t.External:
			return fmt.Errorf("kern: %w: agent %q: tool %q has no Call", run.ErrInvalidArgument, a.Name, t.Name)
		}
		if _, err := json.Marshal(t.Parameters); err != nil {
			return fmt.Errorf("kern: %w: agent %q: tool %q: Parameters is not JSON: %v", run.ErrInvalidArgument, a.Name, t.Name, err)
		}
		seen[t.Name] = true
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
	if !cfg.runIDSet {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("kern: new run id: %w", err)
		}
		cfg.runID = id.String()
	}

	var model Model
	if !cfg.background {
		// Resolved before anything is written: a missing API key fails the
		// call, not a stored run.
		m, err := a.models.get(a.Model)
		if err != nil {
			return nil, fmt.Errorf("kern: agent %q: %w", a.Name, err)
		}
		model = m
	}
	submitCtx, span := startSubmit(ctx, a.Name, cfg.runID)
	out, err := a.DB.SubmitRun(submitCtx, db.SubmitParams{
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
		WaitTimeout:    cfg.waitTimeout,
		ConcurrencyKey: cfg.concurrencyKey,
		Priority:       cfg.priority,
		StartAt:        cfg.startTime(),
		Tx:             cfg.tx,
		WebhookURL:     cfg.webhookURL,
		TenantID:       cfg.tenant,
	})
	endSubmit(span, out, err)
	if err != nil || cfg.background || out.Status != run.StatusPending || out.Attempt > 0 {
		return out, err
	}

	// A tenant's run is read back through the tenant's view: its id may
	// also be another tenant's.
	var view runView = a.DB
	if cfg.tenant != "" {
		if view, err = a.DB.ForTenant(cfg.tenant); err != nil {
			return nil, err
		}
	}
	if cfg.onEvent != nil {
		stopEvents := a.forwardEvents(ctx, view, out.RunID, cfg.onEvent)
		defer stopEvents()
	}
	return a.runForeground(ctx, model, view, out.RunID, engine.RunKey(cfg.tenant, out.RunID))
}

// runView is how a foreground Run reads its run back: the operator's
// db.DB, or the run's tenant's db.TenantDB.
type runView interface {
	GetRun(ctx context.Context, runID string) (*run.Output, error)
	WaitRun(ctx context.Context, runID string) (*run.Output, error)
	CancelRun(ctx context.Context, runID string) (bool, error)
	Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error]
}

// runForeground executes a submitted foreground run and returns it
// terminal. Every accepted run reaches a terminal status: when the caller's
// ctx ends first — also before the run could start — the run ends
// cancelled; when Postgres could not be written, the run is cancelled if it
// still can be, and otherwise left to the workers' rescue, which re-queues a
// foreground run whose process stopped heartbeating (see db's package doc).
func (a *Agent) runForeground(ctx context.Context, model Model, view runView, runID, key string) (*run.Output, error) {
	execErr := a.executeForeground(ctx, model, key)
	for {
		out, err := view.GetRun(context.WithoutCancel(ctx), runID)
		switch {
		case err == nil && out.Status.Terminal():
			return out, nil
		case ctx.Err() != nil || execErr != nil:
			// Nobody is left to run it here: end it as the caller's going
			// away, bounded, since Postgres may be what failed.
			endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
			defer cancel()
			if _, cerr := view.CancelRun(endCtx, runID); cerr != nil {
				// Left to the workers' rescue; say what failed first.
				return nil, cmp.Or(execErr, cerr)
			}
			if out, err = view.GetRun(endCtx, runID); err != nil || execErr == nil {
				return out, err
			}
			return out, execErr
		case err != nil:
			return nil, err
		}
		// Not terminal, and the caller is still here: this process lost the
		// run to a rescue (it was cut off from Postgres for longer than
		// RescueAfter) and a worker has it now. Wait for that to end.
		if out, err = view.WaitRun(ctx, runID); err == nil {
			return out, nil
		}
		if ctx.Err() == nil {
			return nil, err
		}
	}
}

// executeForeground runs the attempts of the run of key runID
// (engine.RunKey) in the caller's goroutine, waiting out retry delays (a
// cancel during one ends the wait at once).
func (a *Agent) executeForeground(ctx context.Context, model Model, runID string) error {
	exec := newExecutor(a.DB, slog.Default())
	for {
		err := exec.execute(ctx, a, model, runID, nil)
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
			return nil // runForeground ends it as the caller's going away
		}
	}
}

// forwardEvents follows the run's events into fn until the terminal event.
// The returned func waits for that, bounded, so every event of the run has
// been delivered when Run returns.
func (a *Agent) forwardEvents(ctx context.Context, view runView, runID string, fn func(run.Event)) (wait func()) {
	followCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range view.Events(followCtx, runID, 0) {
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

// CancelRun cancels a run and every live run below it (its children, at
// any depth); see db.DB.CancelRun for what true and false mean.
func (a *Agent) CancelRun(ctx context.Context, runID string) (bool, error) {
	if err := a.requireDB(); err != nil {
		return false, err
	}
	return a.DB.CancelRun(ctx, runID)
}

// WaitRun blocks until the run is terminal or waiting for answers to its
// tool calls (run.StatusWaiting), or ctx ends.
func (a *Agent) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	if err := a.requireDB(); err != nil {
		return nil, err
	}
	return a.DB.WaitRun(ctx, runID)
}

func (a *Agent) requireDB() error {
	if a == nil || a.DB == nil {
		return fmt.Errorf("kern: %w: agent has no DB", run.ErrInvalidArgument)
	}
	return nil
}
