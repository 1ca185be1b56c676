package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
)

// perKey measures what the per-key limit costs a run: runs/s of background
// runs with a concurrency key each (all distinct, so the limit never holds
// one back; the worker has MaxRunsPerKey 1) against the same runs without
// a key, in alternating rounds on one worker. The difference is the claim's
// per-key work: the advisory lock and the key's two index reads, plus the
// key column in the row.
func perKey(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	env.Fake.Script(nil)
	a := &agent.Agent{Name: "bench-perkey", Model: env.Model, DB: d}
	w, err := agent.NewWorker(d, agent.WorkerConfig{
		MaxConcurrentRuns: cfg.Concurrency, MaxRunsPerKey: 1, Logger: cfg.Logger,
		FetchCooldown: cfg.FetchCooldown, FetchPollInterval: cfg.FetchPollInterval,
	}, a)
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}()
	n, submitters, rounds := max(cfg.Runs, 50), max(cfg.Submitters, 1), max(cfg.Rounds, 3)
	seq := 0
	round := func(keyed bool) (float64, error) {
		start := time.Now()
		ids := make([]string, n)
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			firstErr error
		)
		next := make(chan int)
		for range submitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					opts := []agent.RunOption{agent.Background(true)}
					if keyed {
						mu.Lock()
						seq++
						opts = append(opts, agent.WithConcurrencyKey(fmt.Sprintf("user-%d", seq)))
						mu.Unlock()
					}
					out, err := a.Run(ctx, "hello", opts...)
					if err == nil {
						_, err = a.WaitRun(ctx, out.RunID)
						ids[i] = out.RunID
					}
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
				}
			}()
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
	if _, err := round(false); err != nil { // warm up
		return nil, err
	}
	var plain, keyed []float64
	for range rounds {
		r, err := round(false)
		if err != nil {
			return nil, err
		}
		plain = append(plain, r)
		if r, err = round(true); err != nil {
			return nil, err
		}
		keyed = append(keyed, r)
	}
	p, k := median(plain), median(keyed)
	note := fmt.Sprintf("%d runs a round, %d submitters waiting for each run, MaxConcurrentRuns %d; median of %d alternating rounds",
		n, submitters, cfg.Concurrency, rounds)
	return []Result{
		{Name: "perkey: runs/s without a concurrency key", Value: fmt.Sprintf("%.0f", p), Note: note},
		{Name: "perkey: runs/s with a distinct key each (MaxRunsPerKey 1)", Value: fmt.Sprintf("%.0f", k), Note: note},
		{Name: "perkey: per-key overhead per run", Value: ms(time.Duration((1/k - 1/p) * float64(time.Second) * float64(submitters))),
			Note: "(1/keyed − 1/plain) × submitters: the latency a run gains, end to end"},
	}, nil
}
