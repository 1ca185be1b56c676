// Package bench measures kern's figures against a real Postgres and the fake
// model over real HTTP: submit latency, cancel latency, WaitRun wake-up and
// end-to-end throughput. cmd/kern-bench prints them; a smoke test runs them
// small so they cannot rot.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// Config sizes a benchmark run.
type Config struct {
	Runs        int // end-to-end runs
	Submitters  int // concurrent submitters for the end-to-end figure
	Concurrency int // WorkerConfig.MaxConcurrentRuns
	Samples     int // samples for each latency figure
	Logger      *slog.Logger
	// RecoveryRounds > 0 measures recovery after SIGKILL: each round kills
	// a worker process holding several runs. It needs Env.SpawnWorker.
	RecoveryRounds int
	// Only limits the figures to these groups: submit, e2e, heartbeat,
	// cancel, wait, events, pickup, recovery, memory, scale, bounded,
	// tools, toolrecovery, schedules, perkey, retention, telemetry, steady,
	// pooler. Empty: all but pooler, which runs only when named.
	Only []string
	// ToolKills > 0 measures the recovery of tool runs after SIGKILL: each
	// kill is of a worker process between two tool calls of its runs. It
	// needs Env.SpawnToolWorker.
	ToolKills int
	// WaitingRuns is how many runs wait for an approval at once in the
	// approval group's cost figure (0 skips it).
	WaitingRuns int
	// InFlight is how many streaming runs one worker process holds for the
	// memory figure, RSSRuns how many runs it works for the growth figure
	// (0 skips the memory figures; they need Env.SpawnWorker).
	InFlight int
	RSSRuns  int
	// ScaleRows is how many finished runs the table holds for the GetRun
	// figure (0 skips it).
	ScaleRows int
	// RetentionRows is how many expired finished runs a worker's Retention
	// deletes while runs flow, for the retention figures (0 skips them).
	RetentionRows int
	// FetchCooldown and FetchPollInterval are River's, for kern's worker
	// and the floor alike (0: River's defaults).
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	// Rounds is how many times the end-to-end figure alternates kern and
	// the floor (0 or 1: once each).
	Rounds int
	// SteadyRate is the offered load, in runs/s, of the steady group: kern
	// and the floor are given the same submits at the same times.
	SteadyRate int
	// heartbeat overrides WorkerConfig.HeartbeatInterval (0: default).
	heartbeat time.Duration
	// pace > 0 makes drive submit open loop at pace runs/s (steady.go)
	// instead of from Submitters goroutines as fast as they can.
	pace float64
	// Pooler sizes the pooler group (pooler.go), which runs only when
	// Only names it.
	Pooler PoolerConfig
	// retention is WorkerConfig.Retention (0: default).
	retention time.Duration
}

// Result is one figure.
type Result struct {
	Name  string
	Value string
	Note  string
}

// WorkerProcess is a worker started by Env.SpawnWorker.
type WorkerProcess struct {
	PID  int
	Kill func() // SIGKILL, and wait for it
}

// Env is what the benchmark runs against: a migrated database per figure
// comes from NewDB, the model server is shared.
type Env struct {
	NewDB func(ctx context.Context) (*db.DB, func(), error)
	Fake  *fakellm.Server
	Model agent.Model
	// SpawnWorker starts a worker process (default WorkerConfig but for
	// MaxConcurrentRuns, one agent "bench" whose model id is name) on dbURL.
	SpawnWorker func(name, dbURL string, concurrency int) (*WorkerProcess, error)
	// SpawnToolWorker starts a tool worker process (RunToolWorkerProcess,
	// WorkerConfig.RescueAfter rescueAfter) on dbURL.
	SpawnToolWorker func(name, dbURL string, rescueAfter time.Duration) (*WorkerProcess, error)
	// SpawnPooledWorker starts a worker process as SpawnWorker does (20
	// concurrent runs) on dbURL, with db.WithDirectURL(directURL) unless it
	// is "" and RescueAfter rescueAfter (0: default): the pooler group's.
	SpawnPooledWorker func(name, dbURL, directURL string, rescueAfter time.Duration) (*WorkerProcess, error)
	// DatabaseURL returns the URL of a DB made by NewDB.
	DatabaseURL func(d *db.DB) string
	// PostgresCPU, when set, returns the CPU time the Postgres server has
	// used so far (only a server on this machine can tell).
	PostgresCPU func() (time.Duration, bool)
	// KernCLI, when set, returns the path of a built kern binary (the scale
	// group times `kern runs list` with it).
	KernCLI func() (string, error)
	// PostgresCounters, when set, reads the server's PostgresCounters.
	PostgresCounters func(ctx context.Context) (PostgresCounters, error)
}

// Run measures every figure and returns them in print order.
func Run(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	var out []Result
	for _, g := range []struct {
		name string
		run  func(context.Context, Env, Config) ([]Result, error)
	}{
		{"submit", submitLatency}, {"e2e", endToEnd}, {"heartbeat", heartbeatCost}, {"cancel", cancelLatency},
		{"wait", waitWakeup}, {"events", eventLag}, {"pickup", pickup}, {"recovery", recovery}, {"memory", memory}, {"scale", scale},
		{"bounded", bounded}, {"tools", tools}, {"toolrecovery", toolRecovery}, {"approval", approval}, {"follow", followLag}, {"schedules", schedules},
		{"perkey", perKey}, {"retention", retention}, {"http", httpAPI}, {"ratelimit", rateLimit}, {"telemetry", telemetryCost},
		{"steady", steadySubmit}, {"pooler", pooler},
	} {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, g.name) {
			continue
		}
		res, err := g.run(ctx, env, cfg)
		if err != nil {
			return out, err
		}
		out = append(out, res...)
	}
	return out, nil
}

func newWorker(ctx context.Context, d *db.DB, env Env, cfg Config, a *agent.Agent) (func(), error) {
	w, err := agent.NewWorker(d, agent.WorkerConfig{
		MaxConcurrentRuns: cfg.Concurrency,
		HeartbeatInterval: cfg.heartbeat,
		Retention:         cfg.retention,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
		Logger:            cfg.Logger,
	}, a)
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}, nil
}

// submitLatency: background submits one after another, no worker running,
// so the figure is the submit itself (row + job in one transaction).
func submitLatency(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	lat := make([]time.Duration, 0, cfg.Samples)
	for range cfg.Samples {
		start := time.Now()
		if _, err := a.Run(ctx, "hello", agent.Background(true)); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	floorLat, err := floorSubmitLatency(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	return append([]Result{
		{"submit latency p50", ms(pct(lat, 50)), fmt.Sprintf("%d sequential background submits", cfg.Samples)},
		{"submit latency p99", ms(pct(lat, 99)), ""},
	}, floorLat...), nil
}

// heartbeatCost: throughput of runs that stream 20 tokens over ~0.4s, with
// the default heartbeat (5s: these runs never send one) and with every run
// heartbeating every 50ms — a hundred times the default rate, so the
// difference bounds what heartbeats can cost.
func heartbeatCost(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	reply := fakellm.Reply{Content: fakellm.LoremWords(20), Drip: 20 * time.Millisecond}
	base, err := throughput(ctx, env, cfg, reply)
	if err != nil {
		return nil, err
	}
	cfg.heartbeat = 50 * time.Millisecond
	busy, err := throughput(ctx, env, cfg, reply)
	if err != nil {
		return nil, err
	}
	return []Result{
		{"runs/s, 0.4s streaming runs, default heartbeat", fmt.Sprintf("%.0f", base), "runs shorter than the 5s heartbeat never send one"},
		{"runs/s, 0.4s streaming runs, heartbeat every 50ms", fmt.Sprintf("%.0f", busy), fmt.Sprintf("100x the default rate: cost %.1f%%", 100*(1-busy/base))},
	}, nil
}

// cancelLatency: a run hangs in the model; CancelRun is timed until the run
// is cancelled (the call returns with the status written) and until the
// model server sees the HTTP stream close.
func cancelLatency(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	env.Fake.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Hang: true} })
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	stop, err := newWorker(ctx, d, env, cfg, a)
	if err != nil {
		return nil, err
	}
	defer stop()

	var toCancelled, toClosed []time.Duration
	base := env.Fake.Count()
	for i := range cfg.Samples {
		out, err := a.Run(ctx, "hang", agent.Background(true))
		if err != nil {
			return nil, err
		}
		if err := env.Fake.WaitRequests(ctx, base+i+1); err != nil {
			return nil, err
		}
		seq := base + i + 1
		start := time.Now()
		ok, err := a.CancelRun(ctx, out.RunID)
		if err != nil || !ok {
			return nil, fmt.Errorf("cancel: %v, %w", ok, err)
		}
		toCancelled = append(toCancelled, time.Since(start))
		got, err := a.GetRunOutput(ctx, out.RunID)
		if err != nil || got.Status != run.StatusCancelled {
			return nil, fmt.Errorf("cancelled run is %v (%w)", got, err)
		}
		req, err := env.Fake.WaitClientGone(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("stream of request %d not closed: %w", seq, err)
		}
		toClosed = append(toClosed, max(0, req.ClientGoneAt.Sub(start)))
	}
	out := []Result{
		{"CancelRun → cancelled p50", ms(pct(toCancelled, 50)), fmt.Sprintf("%d runs cancelled mid-stream", cfg.Samples)},
		{"CancelRun → cancelled p99", ms(pct(toCancelled, 99)), ""},
		{"CancelRun → model stream closed p50", ms(pct(toClosed, 50)), "seen by the model server"},
		{"CancelRun → model stream closed p99", ms(pct(toClosed, 99)), ""},
	}
	riverLat, err := riverCancelLatency(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	return append(out, riverLat...), nil
}

// waitWakeup: WaitRun sleeps on a running run; the lag is from the start of
// the finishing statement to WaitRun's return (commit, NOTIFY, listener
// fan-out, re-read).
func waitWakeup(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	lags := make([]time.Duration, 0, cfg.Samples)
	for i := range cfg.Samples {
		lag, err := wakeLag(ctx, d, fmt.Sprintf("wait-%d", i))
		if err != nil {
			return nil, err
		}
		lags = append(lags, lag)
	}
	return []Result{
		{"WaitRun wake-up p50", ms(pct(lags, 50)), "from the finishing UPDATE to WaitRun returning"},
		{"WaitRun wake-up p99", ms(pct(lags, 99)), ""},
	}, nil
}

// wakeLag submits and starts run id (no worker), lets WaitRun sleep on
// it, finishes it and returns the time from the start of the finishing
// statement to WaitRun's return.
func wakeLag(ctx context.Context, d *db.DB, id string) (time.Duration, error) {
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "bench", Input: "x"}); err != nil {
		return 0, err
	}
	claim, err := d.Engine(engine.Key{}).StartRun(ctx, id, nil)
	if err != nil {
		return 0, err
	}
	woke := make(chan time.Time, 1)
	waiting := make(chan struct{})
	go func() {
		sub := d.Engine(engine.Key{}).SubscribeDone(id) // what WaitRun does first; lets us know it is asleep
		close(waiting)
		_, _ = d.WaitRun(ctx, id)
		sub.Close()
		woke <- time.Now()
	}()
	<-waiting
	if err := sleep(ctx, 2*time.Millisecond); err != nil { // let WaitRun read the run and sleep
		return 0, err
	}
	start := time.Now()
	if err := d.Engine(engine.Key{}).FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "done"}); err != nil {
		return 0, err
	}
	return (<-woke).Sub(start), nil
}

// eventLag: a follower reads a running run's events live; the lag is from
// the start of the statement that appends content (and its content.delta
// event) to the follower receiving that event.
func eventLag(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	const id = "events"
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "bench", Input: "x"}); err != nil {
		return nil, err
	}
	claim, err := d.Engine(engine.Key{}).StartRun(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	received := make(chan time.Time, 1)
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	go func() {
		for ev, err := range d.Events(followCtx, id, 1) { // after run.started
			if err != nil {
				return
			}
			if ev.Type == run.EventContentDelta {
				received <- time.Now()
			}
		}
	}()
	if err := sleep(ctx, 50*time.Millisecond); err != nil { // let the follower subscribe
		return nil, err
	}
	lags := make([]time.Duration, 0, cfg.Samples)
	for i := range cfg.Samples {
		start := time.Now()
		if err := d.Engine(engine.Key{}).AppendContent(ctx, claim.Fence, claim.EventSeq+1+int64(i), "token "); err != nil {
			return nil, err
		}
		select {
		case at := <-received:
			lags = append(lags, at.Sub(start))
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("event lag: a content.delta never reached the follower")
		}
	}
	return []Result{
		{"event delivery lag p50", ms(pct(lags, 50)), "from the appending UPDATE to the follower receiving the event"},
		{"event delivery lag p99", ms(pct(lags, 99)), ""},
	}, nil
}

func pct(d []time.Duration, p int) time.Duration { return pctile(d, float64(p)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
