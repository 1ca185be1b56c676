package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// Why a run's context ended, as its cause. Anything else that ends it is the
// caller's context: the worker stopping, or a foreground caller going away.
var (
	errCancelled  = errors.New("run cancelled")
	errTimedOut   = errors.New("run timed out")
	errOwnerLost  = errors.New("run no longer owned by this attempt")
	errHandedBack = errors.New("run handed back for another worker")
)

// Defaults of execution, shared by workers and foreground runs.
const (
	defaultTimeout    = 5 * time.Minute
	defaultFlushEvery = 100 * time.Millisecond
	defaultFlushBytes = 4 << 10
	finalWriteTimeout = 30 * time.Second
)

// executor runs one attempt of a run: claim it, call the model, stream
// content into the row, write the terminal status. Workers and foreground
// runs share it, which is what makes a foreground run persisted exactly like
// a background one.
type executor struct {
	db             *db.DB
	logger         *slog.Logger
	defaultTimeout time.Duration
	flushEvery     time.Duration
	flushBytes     int
	// handBack: when the caller's context ends, release the run to pending
	// (a stopping worker) instead of ending it cancelled (a foreground caller).
	handBack bool
}

// execute runs attempt of the run. agent is nil when no agent of the run's
// name is known here; the run then ends as error. It returns errHandedBack
// when the run was released to another worker, and other errors only when
// Postgres could not be written (the caller may retry).
func (e *executor) execute(ctx context.Context, agent *Agent, runID string, attempt int) error {
	// Subscribe before claiming, so a cancel right after the claim is heard.
	cancelSub := e.db.SubscribeCancel(runID)
	defer cancelSub.Close()

	out, err := e.db.StartRun(ctx, runID, attempt)
	if errors.Is(err, run.ErrNotRunning) {
		return nil // terminal already, or a newer attempt owns it
	}
	if err != nil {
		return err
	}
	log := e.logger.With(slog.String("run_id", runID), slog.String("agent", out.AgentName), slog.Int("attempt", attempt))
	if out.Status != run.StatusRunning {
		log.DebugContext(ctx, "kern: run cancelled before start")
		return nil
	}
	started := time.Now()
	if agent == nil {
		return e.finish(ctx, log, runID, attempt, db.Finish{
			Status: run.StatusError,
			Error:  fmt.Sprintf("agent %q is not registered on this worker", out.AgentName),
		})
	}

	timeout := e.defaultTimeout
	if out.Timeout > 0 {
		timeout = out.Timeout
	}
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	runCtx, stopTimer := context.WithTimeoutCause(runCtx, timeout, fmt.Errorf("%w after %v", errTimedOut, timeout))
	defer stopTimer()
	go func() {
		select {
		case <-cancelSub.C():
			stopRun(errCancelled)
		case <-runCtx.Done():
		}
	}()

	buf := newContentBuffer(e.flushEvery, e.flushBytes,
		func(ctx context.Context, delta string) error { return e.db.AppendContent(ctx, runID, attempt, delta) },
		func(err error) {
			if errors.Is(err, run.ErrNotRunning) {
				stopRun(errOwnerLost)
				return
			}
			log.WarnContext(ctx, "kern: content flush failed; keeping it for the final write", slog.Any("error", err))
		})

	var ttft time.Duration
	callStart := time.Now()
	resp, modelErr := agent.Model.Stream(runCtx, agent.request(out.Input), func(delta string) {
		if ttft == 0 {
			ttft = max(time.Since(callStart), time.Microsecond)
		}
		buf.add(delta)
	})
	tail := buf.close()

	fin := db.Finish{Tail: tail, Metrics: run.Metrics{TimeToFirstToken: ttft}}
	if resp != nil {
		fin.Metrics.InputTokens = resp.Usage.InputTokens
		fin.Metrics.OutputTokens = resp.Usage.OutputTokens
		fin.Metrics.TotalTokens = resp.Usage.TotalTokens
	}
	cause := context.Cause(runCtx)
	switch {
	case modelErr == nil:
		fin.Status = run.StatusCompleted
	case errors.Is(cause, errCancelled):
		fin.Status = run.StatusCancelled
	case errors.Is(cause, errTimedOut):
		fin.Status, fin.Error = run.StatusError, cause.Error()
	case errors.Is(cause, errOwnerLost):
		return nil
	case ctx.Err() != nil && e.handBack:
		if err := e.db.ReleaseRun(context.WithoutCancel(ctx), runID, attempt); err != nil {
			return err
		}
		log.InfoContext(ctx, "kern: run handed back")
		return errHandedBack
	case ctx.Err() != nil:
		fin.Status = run.StatusCancelled
	default:
		fin.Status, fin.Error = run.StatusError, modelErr.Error()
	}
	fin.Metrics.Duration = time.Since(started)
	return e.finish(ctx, log, runID, attempt, fin)
}

// finish writes the terminal status. Losing to a cancel is not an error:
// the row says cancelled, which is the truth.
func (e *executor) finish(ctx context.Context, log *slog.Logger, runID string, attempt int, fin db.Finish) error {
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	defer cancel()
	err := e.db.FinishRun(writeCtx, runID, attempt, fin)
	if errors.Is(err, run.ErrNotRunning) {
		log.DebugContext(ctx, "kern: run ended elsewhere first", slog.String("wanted", string(fin.Status)))
		return nil
	}
	if err != nil {
		return err
	}
	log.DebugContext(ctx, "kern: run finished", slog.String("status", string(fin.Status)))
	return nil
}

// request builds the model turn of a run.
func (a *Agent) request(input string) *ModelRequest {
	msgs := make([]Message, 0, 2)
	if a.Instructions != "" {
		msgs = append(msgs, Message{Role: "system", Content: a.Instructions})
	}
	msgs = append(msgs, Message{Role: "user", Content: input})
	return &ModelRequest{Messages: msgs, Tools: a.Tools}
}
