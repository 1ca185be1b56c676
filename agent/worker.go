package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// WorkerConfig tunes a Worker. Zero values take the documented defaults.
type WorkerConfig struct {
	MaxConcurrentRuns int                                        // runs executed at once by this process; default 5
	DefaultTimeout    time.Duration                              // for runs without WithTimeout; default 5m
	MaxAttempts       int                                        // executions of a run before it errors; default 3
	RescueAfter       time.Duration                              // stale-heartbeat threshold; default 30s (reliability release)
	MaxContentBytes   int                                        // largest answer kept; default 4 MiB (reliability release)
	Retention         time.Duration                              // delete finished runs after; default 24h (operator release)
	MaxRunsPerKey     int                                        // live runs per concurrency key (operator release)
	OnComplete        func(ctx context.Context, out *run.Output) // operator release
	WebhookSecret     string                                     // operator release
	Logger            *slog.Logger

	// HeartbeatInterval is how often an executing run proves it is alive,
	// and how often this worker looks for stale runs to rescue. Default 5s.
	HeartbeatInterval time.Duration
	// RetryBaseDelay is the backoff of the first retry; each further one
	// doubles it, with jitter, unless the provider sends Retry-After.
	// Default 1s.
	RetryBaseDelay time.Duration

	// FetchCooldown and FetchPollInterval tune River's fetching (see
	// river.Config): the shortest time between two fetches of new runs,
	// and the longest wait for one when no notification arrives. River's
	// defaults (100ms and 1s) when zero.
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration

	// FlushInterval and FlushBytes batch streamed content into the row:
	// whichever comes first after the first unflushed delta. Defaults 100ms
	// and 4 KiB.
	FlushInterval time.Duration
	FlushBytes    int
}

func (c *WorkerConfig) withDefaults() (WorkerConfig, error) {
	out := *c
	if out.MaxConcurrentRuns < 0 || out.DefaultTimeout < 0 || out.MaxAttempts < 0 || out.FlushInterval < 0 || out.FlushBytes < 0 ||
		out.RescueAfter < 0 || out.MaxContentBytes < 0 || out.HeartbeatInterval < 0 || out.RetryBaseDelay < 0 {
		return out, fmt.Errorf("%w: worker config has a negative value", run.ErrInvalidArgument)
	}
	if out.MaxConcurrentRuns == 0 {
		out.MaxConcurrentRuns = 5
	}
	if out.DefaultTimeout == 0 {
		out.DefaultTimeout = defaultTimeout
	}
	if out.MaxAttempts == 0 {
		out.MaxAttempts = defaultMaxAttempts
	}
	if out.RescueAfter == 0 {
		out.RescueAfter = 30 * time.Second
	}
	if out.MaxContentBytes == 0 {
		out.MaxContentBytes = defaultMaxContentBytes
	}
	if out.HeartbeatInterval == 0 {
		out.HeartbeatInterval = min(defaultHeartbeat, out.RescueAfter/3)
	}
	if out.RetryBaseDelay == 0 {
		out.RetryBaseDelay = defaultRetryBase
	}
	if out.HeartbeatInterval >= out.RescueAfter {
		return out, fmt.Errorf("%w: HeartbeatInterval %v must be shorter than RescueAfter %v", run.ErrInvalidArgument, out.HeartbeatInterval, out.RescueAfter)
	}
	if out.FlushInterval == 0 {
		out.FlushInterval = defaultFlushEvery
	}
	if out.FlushBytes == 0 {
		out.FlushBytes = defaultFlushBytes
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out, nil
}

// Worker executes background runs. It is a River client working kern's
// queue; start as many as you like, in as many processes and hosts as you
// like, against the same database: River hands each run to one of them.
type Worker struct {
	db     *db.DB
	cfg    WorkerConfig
	agents map[string]*Agent
	exec   *executor
	client *river.Client[pgx.Tx]

	mu          sync.Mutex
	stopRescuer context.CancelFunc
	rescuerDone chan struct{}
}

// NewWorker prepares a worker for the given agents. Agents may leave DB nil:
// the worker uses d.
func NewWorker(d *db.DB, cfg WorkerConfig, agents ...*Agent) (*Worker, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: worker needs a DB", run.ErrInvalidArgument)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("%w: worker needs at least one agent", run.ErrInvalidArgument)
	}
	w := &Worker{db: d, cfg: cfg, agents: make(map[string]*Agent, len(agents))}
	for _, a := range agents {
		switch {
		case a == nil:
			return nil, fmt.Errorf("%w: nil agent", run.ErrInvalidArgument)
		case a.Name == "":
			return nil, fmt.Errorf("%w: agent has no Name", run.ErrInvalidArgument)
		case a.Model == nil:
			return nil, fmt.Errorf("%w: agent %q has no Model", run.ErrInvalidArgument, a.Name)
		case w.agents[a.Name] != nil:
			return nil, fmt.Errorf("%w: two agents named %q", run.ErrInvalidArgument, a.Name)
		}
		w.agents[a.Name] = a
	}
	w.exec = newExecutor(d, cfg.Logger)
	w.exec.defaultTimeout = cfg.DefaultTimeout
	w.exec.maxAttempts = cfg.MaxAttempts
	w.exec.retryBase = cfg.RetryBaseDelay
	w.exec.heartbeat = cfg.HeartbeatInterval
	w.exec.maxContentBytes = cfg.MaxContentBytes
	w.exec.flushEvery = cfg.FlushInterval
	w.exec.flushBytes = cfg.FlushBytes
	w.exec.handBack = true

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &runWorker{w: w}); err != nil {
		return nil, fmt.Errorf("kern: worker: %w", err)
	}
	w.client, err = river.NewClient(riverpgxv5.New(d.Pool()), &river.Config{
		Logger: cfg.Logger,
		// kern counts a run's attempts itself; River's attempts only cover
		// a Work that could not reach Postgres.
		MaxAttempts:       max(cfg.MaxAttempts, 5),
		Queues:            map[string]river.QueueConfig{db.QueueName: {MaxWorkers: cfg.MaxConcurrentRuns}},
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
		// A run's own timeout is enforced by the executor, which can then
		// say in the run's Error that it timed out; River must not cut first.
		JobTimeout: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("kern: worker: %w", err)
	}
	return w, nil
}

// Start begins working runs in the background. Cancelling ctx stops the
// worker hard (running runs are handed back); prefer Stop.
func (w *Worker) Start(ctx context.Context) error {
	if err := w.client.Start(ctx); err != nil {
		return fmt.Errorf("kern: start worker: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopRescuer == nil {
		rescueCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w.stopRescuer, w.rescuerDone = cancel, make(chan struct{})
		go w.rescue(rescueCtx, ctx.Done())
	}
	return nil
}

// rescue looks for runs whose worker died, every HeartbeatInterval, until
// the worker stops (or its start context ends).
func (w *Worker) rescue(ctx context.Context, startDone <-chan struct{}) {
	defer close(w.rescuerDone)
	tick := time.NewTicker(w.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-startDone:
			return
		case <-tick.C:
		}
		res, err := w.exec.store.RescueStale(ctx, w.cfg.RescueAfter, w.cfg.MaxAttempts)
		if err != nil {
			if ctx.Err() == nil {
				w.cfg.Logger.WarnContext(ctx, "kern: rescue of stale runs failed", slog.Any("error", err))
			}
			continue
		}
		for _, id := range res.Requeued {
			w.cfg.Logger.WarnContext(ctx, "kern: rescued a run whose worker stopped heartbeating", slog.String("run_id", id))
		}
		for _, id := range res.Failed {
			w.cfg.Logger.WarnContext(ctx, "kern: run lost its worker with no attempts left", slog.String("run_id", id))
		}
	}
}

func (w *Worker) stopRescue() {
	w.mu.Lock()
	stop, done := w.stopRescuer, w.rescuerDone
	w.stopRescuer = nil
	w.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Stop shuts the worker down gracefully: it stops taking runs and lets
// running ones finish until ctx ends; runs still going then are handed back
// to pending (not counted as an attempt) for another worker. None is lost.
func (w *Worker) Stop(ctx context.Context) error {
	w.stopRescue()
	err := w.client.Stop(ctx)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		return fmt.Errorf("kern: stop worker: %w", err)
	}
	// Out of patience: interrupt the rest, which hands them back.
	hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	defer cancel()
	if err := w.client.StopAndCancel(hardCtx); err != nil {
		return fmt.Errorf("kern: stop worker: %w", err)
	}
	return nil
}

// runWorker is the River worker of kern's job kind.
type runWorker struct {
	river.WorkerDefaults[db.RunJobArgs]
	w *Worker
}

// Timeout disables River's job timeout; see NewWorker.
func (*runWorker) Timeout(*river.Job[db.RunJobArgs]) time.Duration { return -1 }

func (rw *runWorker) Work(ctx context.Context, job *river.Job[db.RunJobArgs]) error {
	w := rw.w
	err := w.exec.execute(ctx, w.agents[job.Args.AgentName], job.Args.RunID, &job.ID)
	var retry *retryLater
	switch {
	case errors.As(err, &retry):
		// kern counts the run's attempts itself; a snooze costs no River attempt.
		return river.JobSnooze(retry.delay)
	case errors.Is(err, errHandedBack):
		return river.JobSnooze(0)
	}
	return err
}
