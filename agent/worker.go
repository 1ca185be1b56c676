package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/logx"
	"github.com/kern-go/kern/run"
)

// Worker executes background runs of the agents it serves. It is a River
// client working one queue per agent (engine.QueueFor), so it only ever
// fetches runs it can execute; start as many as you like, in as many
// processes and hosts as you like, serving the same or different agents,
// against the same database: River hands each run to one worker that
// serves its agent. A run of an agent no live worker serves stays pending,
// and its Output.Error says so.
type Worker struct {
	db     *db.DB
	store  engine.Store
	cfg    WorkerConfig
	agents map[string]*Agent
	// models are the agents' models as resolved once at NewWorker (an
	// OpenAIChat or OpenAIResponses without a Client gets its client from the environment).
	models map[string]Model
	exec   *executor
	client *river.Client[pgx.Tx]
	// id names this worker in kern_worker, where it says which agents it
	// serves while it runs.
	id string
	// slots bounds the runs executing at once across all the worker's
	// queues. nil for a worker of one agent: River's MaxWorkers bounds it.
	slots chan struct{}
	// hooks drains the completion outbox (OnComplete, webhooks).
	hooks *hooks
	// tel is the worker's tracer and instruments (telemetry.go).
	tel *workerTelemetry

	mu          sync.Mutex
	stopRescuer context.CancelFunc
	rescuerDone chan struct{}
	// session is this worker's own Postgres session: its liveness, for
	// peers (see maintain). Owned by maintain once started.
	session engine.Session
	// sessionAttempt bounds the first attempt at opening session (0:
	// sessionAttemptTimeout); tests shorten it.
	sessionAttempt time.Duration
}

// NewWorker prepares a worker for the given agents, taking them as they are
// now. Agents may leave DB nil: the worker uses d.
func NewWorker(d *db.DB, cfg WorkerConfig, agents ...*Agent) (*Worker, error) {
	if d == nil {
		return nil, fmt.Errorf("kern: %w: worker needs a DB", run.ErrInvalidArgument)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("kern: %w: worker needs at least one agent", run.ErrInvalidArgument)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("kern: worker id: %w", err)
	}
	w := &Worker{db: d, store: d.Engine(engine.Key{}).ForWorker(id.String()), cfg: cfg, id: id.String(),
		agents: make(map[string]*Agent, len(agents)), models: make(map[string]Model, len(agents)),
		tel: newWorkerTelemetry(&cfg)}
	queues := make(map[string]river.QueueConfig, len(agents))
	for _, a := range agents {
		switch {
		case a == nil:
			return nil, fmt.Errorf("kern: %w: nil agent", run.ErrInvalidArgument)
		case a.Name == "":
			return nil, fmt.Errorf("kern: %w: agent has no Name", run.ErrInvalidArgument)
		case w.agents[a.Name] != nil:
			return nil, fmt.Errorf("kern: %w: two agents named %q", run.ErrInvalidArgument, a.Name)
		}
		if err := a.validateConfig(); err != nil {
			return nil, err
		}
		model, err := a.models.get(a.Model)
		if err != nil {
			return nil, fmt.Errorf("kern: agent %q: %w", a.Name, err)
		}
		w.agents[a.Name], w.models[a.Name] = a, newTracedModel(w.tel, a.Name, model)
		queues[engine.QueueFor(a.Name)] = river.QueueConfig{MaxWorkers: cfg.MaxConcurrentRuns}
	}
	if len(queues) > 1 {
		w.slots = make(chan struct{}, cfg.MaxConcurrentRuns)
	}
	w.exec = newExecutor(d, cfg.Logger)
	// Claims record this worker, for crash recovery by session; the
	// executions' claims and ends go to their kern.run spans.
	w.exec.store = telemetryStore{Store: w.store}
	w.exec.defaultTimeout = cfg.DefaultTimeout
	w.exec.maxAttempts = cfg.MaxAttempts
	w.exec.retryBase = cfg.RetryBaseDelay
	w.exec.heartbeat = cfg.HeartbeatInterval
	w.exec.maxContentBytes = cfg.MaxContentBytes
	w.exec.flushEvery = cfg.FlushInterval
	w.exec.flushBytes = cfg.FlushBytes
	w.exec.handBack = true
	w.exec.maxRunsPerKey = cfg.MaxRunsPerKey

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &runWorker{w: w}); err != nil {
		return nil, fmt.Errorf("kern: worker: %w", err)
	}
	if err := w.setupHooks(queues, workers); err != nil {
		return nil, fmt.Errorf("kern: worker: %w", err)
	}
	// d.RiverDriver: the pool's, LISTENing on the direct URL when there is
	// one; a transaction pooler's without one cannot LISTEN at all, and
	// the worker then polls for new runs every FetchPollInterval.
	w.client, err = river.NewClient(d.RiverDriver(), &river.Config{
		PollOnly: !d.ListensForNotifications(),
		// The worker's id is its River client's: a job River has running
		// names its client last in attempted_by, so a completion or webhook
		// job held by a worker whose session ended is rescued at once
		// (db's RescueStale), not after River's hour.
		ID:     w.id,
		Logger: logx.RiverLogger(cfg.Logger),
		Schema: d.Schema(), // db.WithSchema's, "" without it
		// kern counts a run's attempts itself; River's attempts only cover
		// a Work that could not reach Postgres.
		MaxAttempts:       max(cfg.MaxAttempts, 5),
		Queues:            queues,
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
		// A run's own timeout is enforced by the executor, which can then
		// say in the run's Error that it timed out; River must not cut first.
		JobTimeout: -1,
		// River's work spans and metrics (river.work, …), on the worker's
		// providers; a run's own span, kern.run, links to its job's.
		Middleware: []rivertype.Middleware{otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider, EnableTracePropagation: true,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("kern: worker: %w", err)
	}
	return w, nil
}

// registrationTTL is how long a worker's registration outlives its last
// renewal: a worker that died stops counting as serving its agents then.
func (w *Worker) registrationTTL() time.Duration { return 3 * w.cfg.HeartbeatInterval }

func (w *Worker) agentNames() []string {
	names := make([]string, 0, len(w.agents))
	for name := range w.agents {
		names = append(names, name)
	}
	return names
}

// Start begins working runs in the background. Cancelling ctx stops the
// worker hard (running runs are handed back); prefer Stop. The worker's own
// Postgres session (its liveness) is opened first, an attempt that fails
// or hangs past its deadline tried again within ctx (worker_session.go).
func (w *Worker) Start(ctx context.Context) error {
	if err := w.store.RegisterWorker(ctx, w.id, w.agentNames(), w.registrationTTL()); err != nil {
		return fmt.Errorf("kern: start worker: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopRescuer == nil && w.session == nil {
		// Before the first claim: a run this worker claims is rescued
		// within a second of the process dying.
		session, err := w.startSession(ctx) // worker_session.go: retried within ctx
		if err != nil {
			return fmt.Errorf("kern: start worker: %w", err)
		}
		w.session = session
	}
	if err := w.client.Start(ctx); err != nil {
		return fmt.Errorf("kern: start worker: %w", err)
	}
	if w.stopRescuer == nil {
		maintainCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w.stopRescuer, w.rescuerDone = cancel, make(chan struct{})
		go w.maintain(maintainCtx, ctx.Done())
	}
	return nil
}

// maintain renews the worker's registration and looks for runs whose worker
// died, every HeartbeatInterval, and applies Retention, until the worker
// stops (or its start context ends).
func (w *Worker) maintain(ctx context.Context, startDone <-chan struct{}) {
	defer close(w.rescuerDone)
	var retention sync.WaitGroup
	defer retention.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if w.cfg.Retention > 0 {
		retention.Go(func() { retain(ctx, w.db, w.cfg.Retention, retentionEvery, w.cfg.Logger) })
	}
	retention.Go(func() { w.hooks.drain(ctx) })
	retention.Go(func() { w.fireSchedules(ctx) }) // schedules.go
	tick := time.NewTicker(w.cfg.HeartbeatInterval)
	defer tick.Stop()
	probe := time.NewTicker(livenessProbeEvery)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return // Stop: it closes the session once the runs are done
		case <-startDone:
			// A hard stop: River hands the runs back; the session can go.
			w.closeSession()
			return
		case <-probe.C:
			// A peer whose session ended (its process died): rescue its
			// runs now rather than after RescueAfter.
			dead, err := w.store.DeadSessionRuns(ctx)
			if err != nil || !dead {
				continue
			}
		case <-tick.C:
			if err := w.store.RegisterWorker(ctx, w.id, w.agentNames(), w.registrationTTL()); err != nil && ctx.Err() == nil {
				w.cfg.Logger.WarnContext(ctx, "kern: renewing the worker's registration failed", slog.Any("error", err))
			}
			w.renewSession(ctx)
		}
		w.rescue(ctx)
	}
}

// livenessProbeEvery is how often a worker looks for peers whose session
// ended: about the delay before their runs are rescued.
const livenessProbeEvery = 250 * time.Millisecond

// rescue takes over runs of dead workers and re-queues lost ones.
func (w *Worker) rescue(ctx context.Context) {
	res, err := w.store.RescueStale(ctx, w.cfg.RescueAfter, w.cfg.MaxAttempts)
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Logger.WarnContext(ctx, "kern: rescue of stale runs failed", slog.Any("error", err))
		}
		return
	}
	w.tel.rescued(ctx, res)
	for _, id := range res.Requeued {
		w.cfg.Logger.WarnContext(ctx, "kern: rescued a run whose worker or job was lost", slog.String("run_id", id))
	}
	for _, id := range res.Failed {
		w.cfg.Logger.WarnContext(ctx, "kern: run lost its worker with no attempts left", slog.String("run_id", id))
	}
	if res.HookJobs > 0 {
		w.cfg.Logger.WarnContext(ctx, "kern: rescued completion and webhook jobs whose worker was lost", slog.Int("jobs", res.HookJobs))
	}
}

// renewSession checks the worker's own session and opens a new one when it
// broke (a Postgres restart, a dropped connection): until then peers judge
// this worker by its runs' heartbeats, as they do any worker after a
// restart. A session that dropped while Postgres stayed up made this
// worker look dead: its runs may have been rescued, and their fenced
// writes fail here — nothing runs twice at once to completion.
func (w *Worker) renewSession(ctx context.Context) {
	w.mu.Lock()
	old := w.session
	w.mu.Unlock()
	if old != nil && old.Check(ctx) == nil {
		return
	}
	w.cfg.Logger.WarnContext(ctx, "kern: the worker's own Postgres session ended; opening another")
	// The new session is recorded before the old one is closed: no moment
	// in which a live worker's recorded session is gone.
	// Bounded like one of Start's attempts: a connection that hangs must
	// not stop the registration's renewal; the next tick tries again.
	fresh, err := w.openSessionOnce(ctx, cmp.Or(w.sessionAttempt, sessionAttemptTimeout))
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Logger.WarnContext(ctx, "kern: opening the worker's Postgres session failed", slog.Any("error", err))
		}
		return // the old one, if any, stays until the next try
	}
	w.mu.Lock()
	w.session = fresh
	w.mu.Unlock()
	if old != nil {
		_ = old.Close(context.WithoutCancel(ctx))
	}
}

func (w *Worker) closeSession() {
	w.mu.Lock()
	s := w.session
	w.session = nil
	w.mu.Unlock()
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}
}

func (w *Worker) stopMaintenance() {
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
// It is idempotent.
func (w *Worker) Stop(ctx context.Context) error {
	w.stopMaintenance()
	defer func() {
		// Bounded: a worker that cannot reach Postgres to say goodbye
		// simply expires. The session closes last: while runs finish or
		// are handed back, the worker must not look dead to its peers.
		byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = w.store.UnregisterWorker(byeCtx, w.id)
		w.closeSession()
	}()
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
