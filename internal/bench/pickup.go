package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
)

// arrivals is a Model that notes when each run's model call begins — the
// moment a worker has fetched the job, claimed the run and is about to send
// the request — keyed by the run's prompt.
type arrivals struct {
	agent.Model
	mu sync.Mutex
	at map[string]chan time.Time
}

func (m *arrivals) expect(prompt string) <-chan time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := make(chan time.Time, 1)
	m.at[prompt] = c
	return c
}

func (m *arrivals) Stream(ctx context.Context, req *agent.ModelRequest, onDelta func(string)) (*agent.ModelResponse, error) {
	now := time.Now()
	prompt := req.Messages[len(req.Messages)-1].Content
	m.mu.Lock()
	if c := m.at[prompt]; c != nil {
		c <- now
		delete(m.at, prompt)
	}
	m.mu.Unlock()
	return m.Model.Stream(ctx, req, onDelta)
}

// pickup: how long a background run waits for a worker with kern's DEFAULT
// settings (no fetch tuning, default pool): from Run returning to the
// worker calling the model. Idle: one run at a time, at random moments;
// under load: runs submitted at a steady 100/s. Then the runs/s one worker
// reaches at the defaults.
func pickup(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	env.Fake.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Content: "ok"} })
	model := &arrivals{Model: env.Model, at: map[string]chan time.Time{}}
	a := &agent.Agent{Name: "bench", Model: model, DB: d}
	defaults := cfg
	defaults.FetchCooldown, defaults.FetchPollInterval, defaults.Concurrency = 0, 0, 0
	stop, err := newWorker(ctx, d, env, defaults, a)
	if err != nil {
		return nil, err
	}
	defer stop()

	samples := max(cfg.Samples/3, 20)
	idle, err := idlePickups(ctx, a, model, "idle", samples, 50*time.Millisecond)
	if err != nil {
		return nil, err
	}

	loaded := make([]time.Duration, samples)
	errs := make(chan error, samples)
	var wg sync.WaitGroup
	tick := time.NewTicker(10 * time.Millisecond) // 100 runs/s
	for i := range samples {
		<-tick.C
		prompt := fmt.Sprintf("loaded %d", i)
		arrived := model.expect(prompt)
		out, err := a.Run(ctx, prompt, agent.Background(true))
		if err != nil {
			tick.Stop()
			return nil, err
		}
		submitted := time.Now()
		wg.Go(func() {
			lat, err := arrival(ctx, out.RunID, arrived, submitted)
			loaded[i] = lat
			errs <- err
		})
	}
	tick.Stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}

	rate, err := throughput(ctx, env, defaults, fakellm.Reply{Content: "The capital of France is Paris."})
	if err != nil {
		return nil, err
	}
	return []Result{
		{"pickup at defaults, idle p50", ms(pct(idle, 50)), fmt.Sprintf("Run returning → the worker calling the model; %d runs one at a time, default WorkerConfig", samples)},
		{"pickup at defaults, idle p99", ms(pct(idle, 99)), ""},
		{"pickup at defaults, 100 runs/s p50", ms(pct(loaded, 50)), fmt.Sprintf("%d runs submitted 10ms apart", samples)},
		{"pickup at defaults, 100 runs/s p99", ms(pct(loaded, 99)), ""},
		{"end-to-end runs/s at defaults", fmt.Sprintf("%.0f", rate), fmt.Sprintf("%d runs, %d submitters, default WorkerConfig (MaxConcurrentRuns 5, kern's fetch defaults)", cfg.Runs, cfg.Submitters)},
	}, nil
}

// idlePickups submits n runs one at a time, each after a random gap of up
// to maxGap, through a (whose model is model) and returns each one's
// pickup: from Run returning to a worker calling the model. Each run is
// finished before the next.
func idlePickups(ctx context.Context, a *agent.Agent, model *arrivals, prefix string, n int, maxGap time.Duration) ([]time.Duration, error) {
	idle := make([]time.Duration, 0, n)
	for i := range n {
		// A random gap, so submits fall anywhere in the worker's poll cycle.
		if err := sleep(ctx, time.Duration(rand.N(int64(maxGap)))); err != nil {
			return nil, err
		}
		prompt := fmt.Sprintf("%s %d", prefix, i)
		arrived := model.expect(prompt)
		out, err := a.Run(ctx, prompt, agent.Background(true))
		if err != nil {
			return nil, err
		}
		lat, err := arrival(ctx, out.RunID, arrived, time.Now())
		if err != nil {
			return nil, err
		}
		idle = append(idle, lat)
		if _, err := a.WaitRun(ctx, out.RunID); err != nil {
			return nil, err
		}
	}
	return idle, nil
}

// arrival waits for a run's model call (arrived) and returns how long
// after submitted it came.
func arrival(ctx context.Context, runID string, arrived <-chan time.Time, submitted time.Time) (time.Duration, error) {
	select {
	case at := <-arrived:
		return at.Sub(submitted), nil
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("pickup: run %s never reached the model", runID)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
