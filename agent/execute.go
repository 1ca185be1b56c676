package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// Why a run's context ended, as its cause. Anything else that ends it is the
// caller's context: the worker stopping, or a foreground caller going away.
var (
	errCancelled  = errors.New("run cancelled")
	errTimedOut   = errors.New("run timed out")
	errOwnerLost  = errors.New("run no longer owned by this attempt")
	errTooLarge   = errors.New("answer too large")
	errHandedBack = errors.New("run handed back for another worker")
	errKeyBusy    = errors.New("run held back by its concurrency key")
)

// retryLater is execute's answer for a run put back to pending after a
// retryable failure: execute it again after delay.
type retryLater struct{ delay time.Duration }

func (r *retryLater) Error() string { return fmt.Sprintf("run retries in %v", r.delay) }

// Defaults of execution, shared by workers and foreground runs.
const (
	defaultTimeout         = 5 * time.Minute
	defaultMaxAttempts     = 3
	defaultRetryBase       = time.Second
	defaultHeartbeat       = 5 * time.Second
	defaultMaxContentBytes = 4 << 20
	defaultFlushEvery      = 100 * time.Millisecond
	defaultFlushBytes      = 4 << 10
	finalWriteTimeout      = 2 * time.Minute
	// handOffTimeout bounds the write that hands a run back (shutdown) or
	// puts it back for a retry. Should it fail, the run stays running with
	// no heartbeat, and a rescuer takes it after RescueAfter: nothing waits
	// on Postgres without a deadline.
	handOffTimeout = 10 * time.Second
)

// executor runs one attempt of a run: claim it, call the model, stream
// content into the row, write the terminal status. Workers and foreground
// runs share it, which is what makes a foreground run persisted exactly like
// a background one.
type executor struct {
	store           engine.Store
	logger          *slog.Logger
	defaultTimeout  time.Duration
	maxAttempts     int
	retryBase       time.Duration
	heartbeat       time.Duration
	maxContentBytes int
	flushEvery      time.Duration
	flushBytes      int
	// handBack: when the caller's context ends, release the run to pending
	// (a stopping worker) instead of ending it cancelled (a foreground caller).
	handBack bool
	// maxRunsPerKey is the worker's WorkerConfig.MaxRunsPerKey (0: none).
	maxRunsPerKey int
}

func newExecutor(d *db.DB, logger *slog.Logger) *executor {
	return &executor{
		store:           d.Engine(engine.Key{}),
		logger:          logger,
		defaultTimeout:  defaultTimeout,
		maxAttempts:     defaultMaxAttempts,
		retryBase:       defaultRetryBase,
		heartbeat:       defaultHeartbeat,
		maxContentBytes: defaultMaxContentBytes,
		flushEvery:      defaultFlushEvery,
		flushBytes:      defaultFlushBytes,
	}
}

// execute runs the next attempt of the run with model (agent's, resolved);
// jobID is the River job doing so (nil for a foreground run). It returns
// *retryLater when
// the run was put back for a retry, errHandedBack when it was released to
// another worker, errKeyBusy when its concurrency key held it back (it is
// still pending), and other errors only when Postgres could not be written.
func (e *executor) execute(ctx context.Context, agent *Agent, model Model, runID string, jobID *int64) error {
	// Subscribe before claiming, so a cancel right after the claim is heard.
	cancelSub := e.store.SubscribeCancel(runID)
	defer cancelSub.Close()

	claim, err := e.store.StartKeyedRun(ctx, runID, jobID, e.maxRunsPerKey)
	if errors.Is(err, run.ErrNotRunning) || errors.Is(err, run.ErrNotFound) {
		return nil // terminal already, running elsewhere, or not this job's
	}
	if errors.Is(err, engine.ErrKeyBusy) {
		return errKeyBusy // still pending: its key is full, or not its turn
	}
	if err != nil {
		return err
	}
	out, fence, attempt := claim.Run, claim.Fence, claim.Run.Attempt
	log := e.logger.With(slog.String("run_id", runID), slog.String("agent", out.AgentName), slog.Int("attempt", attempt))
	if out.Status != run.StatusRunning {
		log.DebugContext(ctx, "kern: run cancelled before start")
		return nil
	}
	started := time.Now()

	timeout := e.defaultTimeout
	if out.Timeout > 0 {
		timeout = out.Timeout
	}
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	runCtx, timer, stopTimer := withRunTimeout(runCtx, timeout, fmt.Errorf("%w after %v", errTimedOut, timeout))
	defer stopTimer()
	go e.watch(runCtx, log, fence, cancelSub, stopRun)

	x := &execution{e: e, agent: agent, model: model, log: log, fence: fence, input: out.Input, stop: stopRun, timer: timer,
		maxSteps: cmp.Or(agent.MaxSteps, defaultMaxSteps), seq: claim.EventSeq, tr: newTranscript(out.Input)}
	if tools := agent.offeredTools(); len(tools) > 0 {
		x.tools = make(map[string]*Tool, len(tools))
		for i := range tools {
			x.tools[tools[i].Name] = &tools[i]
		}
	}
	end, err := x.prepare(runCtx, out, claim.TranscriptSeq)
	if err == nil && end == nil {
		var le loopEnd
		le, err = x.run(runCtx, ctx)
		end = &le
	}
	switch {
	case errors.Is(err, run.ErrNotRunning):
		log.InfoContext(ctx, "kern: run lost to a cancel or a rescue; stopping")
		return nil
	case err != nil:
		// The run stays running without a heartbeat: a rescuer takes it.
		return fmt.Errorf("kern: run %q: %w", runID, err)
	case end.waiting:
		// Waiting for answers: the job ends here and frees its slot; the
		// last answer queues a new one.
		return nil
	case end.handedOff:
		// Handed to another agent: its job on that agent's queue goes on.
		log.InfoContext(ctx, "kern: run handed off to another agent")
		return nil
	}

	modelErr, size := end.err, end.size
	fin := engine.Finish{Tail: end.tail, Metrics: x.metrics(*end)}
	cause := context.Cause(runCtx)
	switch {
	case modelErr == nil && size <= e.maxContentBytes:
		fin.Status = run.StatusCompleted
	case errors.Is(cause, errCancelled):
		fin.Status = run.StatusCancelled
	case errors.Is(cause, errTimedOut):
		fin.Status, fin.Error = run.StatusError, cause.Error()
	case errors.Is(cause, errTooLarge) || size > e.maxContentBytes:
		fin.Status, fin.Tail = run.StatusError, ""
		fin.Error = fmt.Sprintf("the answer exceeded the limit of %d bytes (WorkerConfig.MaxContentBytes)", e.maxContentBytes)
	case errors.Is(cause, errOwnerLost):
		log.InfoContext(ctx, "kern: run lost to a cancel or a rescue; stopping")
		return nil
	case ctx.Err() != nil && e.handBack:
		releaseCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOffTimeout)
		defer cancel()
		if err := e.store.ReleaseRun(releaseCtx, fence); err != nil && !errors.Is(err, run.ErrNotRunning) {
			return err
		}
		log.InfoContext(ctx, "kern: run handed back")
		return errHandedBack
	case ctx.Err() != nil:
		fin.Status = run.StatusCancelled
	case Retryable(modelErr) && attempt < e.maxAttempts:
		delay := retryDelay(modelErr, attempt, e.retryBase)
		retryCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOffTimeout)
		defer cancel()
		err := e.store.RetryRun(retryCtx, fence, modelErr.Error(), delay)
		if errors.Is(err, run.ErrNotRunning) {
			return nil // cancelled meanwhile
		}
		if err != nil {
			return err
		}
		log.InfoContext(ctx, "kern: run will be retried", slog.Any("error", modelErr), slog.Duration("delay", delay))
		return &retryLater{delay: delay}
	default:
		fin.Status, fin.Error = run.StatusError, modelErr.Error()
		if Retryable(modelErr) {
			fin.Error = fmt.Sprintf("%s (attempt %d of %d)", fin.Error, attempt, e.maxAttempts)
		}
	}
	fin.Metrics.Duration = time.Since(started)
	return e.finish(ctx, log, fence, fin)
}

// watch interrupts the run when a cancel request arrives or when a
// heartbeat finds the run no longer ours, and heartbeats meanwhile so
// rescuers can tell a live attempt from a dead one.
func (e *executor) watch(ctx context.Context, log *slog.Logger, fence engine.Fence, cancelSub engine.Subscription, stop context.CancelCauseFunc) {
	beat := time.NewTicker(e.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cancelSub.C():
			stop(errCancelled)
			return
		case <-beat.C:
			err := e.store.Heartbeat(ctx, fence)
			switch {
			case errors.Is(err, run.ErrNotRunning):
				stop(errOwnerLost)
				return
			case err != nil && ctx.Err() == nil:
				log.WarnContext(ctx, "kern: heartbeat failed", slog.Any("error", err))
			}
		}
	}
}

// finish writes the terminal status, retrying while Postgres is away (a
// restart must not strand a finished run). Losing to a cancel or a rescue
// is not an error: the row tells the truth either way.
func (e *executor) finish(ctx context.Context, log *slog.Logger, fence engine.Fence, fin engine.Finish) error {
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := e.store.FinishRun(writeCtx, fence, fin)
		switch {
		case err == nil:
			log.DebugContext(ctx, "kern: run finished", slog.String("status", string(fin.Status)))
			return nil
		case errors.Is(err, run.ErrNotRunning):
			log.DebugContext(ctx, "kern: run ended elsewhere first", slog.String("wanted", string(fin.Status)))
			return nil
		}
		log.WarnContext(ctx, "kern: writing the final status failed; retrying", slog.Any("error", err))
		select {
		case <-writeCtx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// resume loads the transcript of a run whose earlier attempts stored steps
// (the claim's transcriptSeq is above 1, the prompt's). A plain run, or a
// tool run's first attempt, reads nothing. A non-nil loopEnd means the run's
// context ended while loading.
func (x *execution) resume(runCtx context.Context, transcriptSeq int) (*loopEnd, error) {
	if transcriptSeq <= 1 {
		return nil, nil
	}
	steps, err := x.e.store.Steps(runCtx, x.fence.RunID)
	if err != nil {
		if runCtx.Err() != nil {
			return &loopEnd{err: context.Cause(runCtx)}, nil
		}
		return nil, err
	}
	x.tr = resumeTranscript(x.input, transcriptSeq, steps, &x.check)
	x.log.DebugContext(runCtx, "kern: run resumed from its transcript", slog.Int("steps", len(steps)))
	return nil, nil
}

// prepare readies an execution before its first model turn: the compiled
// OutputSchema, the session's history (read once, so the conversation does
// not change between turns), and the stored transcript of earlier attempts.
// A non-nil loopEnd ends the run before any turn (its ctx ended).
func (x *execution) prepare(runCtx context.Context, out *run.Output, transcriptSeq int) (*loopEnd, error) {
	schema, err := x.agent.schemas.get(x.agent.Name, x.agent.OutputSchema)
	if err != nil {
		return nil, err // validated when the agent was taken; changed since
	}
	x.check = outputCheck{schema: schema}
	if x.agent.HistoryRuns > 0 && out.SessionID != "" {
		h, err := x.e.store.History(runCtx, out.SessionID, out.AgentName, x.fence.RunID, x.agent.HistoryRuns)
		if err != nil {
			if runCtx.Err() != nil {
				return &loopEnd{err: context.Cause(runCtx)}, nil
			}
			return nil, fmt.Errorf("session history: %w", err)
		}
		x.history = historyMessages(h)
	}
	return x.resume(runCtx, transcriptSeq)
}

// request builds the model turn of a run: the instructions, the session's
// history, the prompt; the loop appends the run's transcript.
func (a *Agent) request(history []Message, input string) *ModelRequest {
	return &ModelRequest{Messages: startMessages(a.Instructions, history, input), Tools: a.offeredTools(), OutputSchema: a.OutputSchema}
}
