package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/run"
)

// rateLimit measures what a fleet rate limit costs a run when it does not
// bind: runs/s with a request and token budget configured for the model
// (both far above what the benchmark spends, so every reservation is
// granted: the worker spends leases of the budget, a statement per lease,
// and reconciles each turn's tokens locally, written with the next lease)
// against the same runs with no limit on file (the process's cache says
// so: no statement), in alternating rounds on one worker.
func rateLimit(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	env.Fake.Script(nil)
	model := ""
	switch m := env.Model.(type) {
	case agent.OpenAIChat:
		model = m.ID
	case *agent.OpenAIChat:
		model = m.ID
	}
	if model == "" {
		return nil, fmt.Errorf("ratelimit: the bench model has no id")
	}
	a := &agent.Agent{Name: "bench-ratelimit", Model: env.Model, DB: d}
	stop, err := newWorker(ctx, d, env, cfg, a)
	if err != nil {
		return nil, err
	}
	defer stop()
	n, submitters, rounds := max(cfg.Runs, 50), max(cfg.Submitters, 1), max(cfg.Rounds, 3)
	round := func(limited bool) (float64, error) {
		l := run.RateLimit{Model: model}
		if limited {
			l.RequestsPerMinute, l.TokensPerMinute = 1<<30, 1<<30
		}
		if err := d.SetRateLimit(ctx, l); err != nil {
			return 0, err
		}
		start := time.Now()
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			firstErr error
		)
		next := make(chan int)
		for range submitters {
			wg.Go(func() {
				for range next {
					out, err := a.Run(ctx, "hello", agent.Background(true))
					if err == nil {
						out, err = a.WaitRun(ctx, out.RunID)
					}
					if err == nil && out.Status != run.StatusCompleted {
						err = fmt.Errorf("ratelimit: run %s ended %s: %s", out.RunID, out.Status, out.Error)
					}
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		if firstErr != nil {
			return 0, firstErr
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	if _, err := round(true); err != nil { // warm up both paths
		return nil, err
	}
	if _, err := round(false); err != nil {
		return nil, err
	}
	var plain, limited []float64
	for range rounds {
		r, err := round(false)
		if err != nil {
			return nil, err
		}
		plain = append(plain, r)
		if r, err = round(true); err != nil {
			return nil, err
		}
		limited = append(limited, r)
	}
	p, l := median(plain), median(limited)
	note := fmt.Sprintf("%d runs a round, %d submitters waiting for each run, MaxConcurrentRuns %d; median of %d alternating rounds",
		n, submitters, cfg.Concurrency, rounds)
	return []Result{
		{Name: "ratelimit: runs/s, no limit on file", Value: fmt.Sprintf("%.0f", p), Note: note},
		{Name: "ratelimit: runs/s, request and token budget not binding", Value: fmt.Sprintf("%.0f", l),
			Note: fmt.Sprintf("%.2fx of no limit; the budget spent from leases, a statement per lease, not per turn", l/p)},
		{Name: "ratelimit: budget overhead per run", Value: ms(time.Duration((1/l - 1/p) * float64(time.Second) * float64(submitters))),
			Note: "(1/limited − 1/none) × submitters: the latency a run gains, end to end"},
	}, nil
}
