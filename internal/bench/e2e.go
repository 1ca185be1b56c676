package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
)

// endToEnd: Runs background runs from Submitters goroutines against a
// zero-latency model, timed from the first submit to the last terminal run.
func endToEnd(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	// kern and the floor take turns, so a slow spell of a shared machine
	// falls on both; each figure is the median of its rounds. A short
	// warm-up round of each goes first and is not counted: otherwise the
	// first measured round is the process's cold start (connections, HTTP
	// keep-alives, the Go runtime) and it falls on kern alone.
	warm := cfg
	warm.Runs = max(cfg.Runs/10, 50)
	if _, err := throughput(ctx, env, warm, fakellm.Reply{Content: "The capital of France is Paris."}); err != nil {
		return nil, err
	}
	if _, err := floor(ctx, env, warm); err != nil {
		return nil, err
	}
	var kernRates, floorRates []float64
	var kernCPU, floorCPU cpuSamples
	var kernCount, floorCount counterSamples
	var kernSubmits, floorSubmits []time.Duration
	kernRound := func() error {
		c0 := env.cpuNow()
		n0, ok0 := env.countersNow(ctx)
		rate, err := throughputTimed(ctx, env, cfg, fakellm.Reply{Content: "The capital of France is Paris."}, &kernSubmits)
		if err != nil {
			return err
		}
		kernRates = append(kernRates, rate)
		kernCPU.add(c0, env.cpuNow(), cfg.Runs)
		n1, ok1 := env.countersNow(ctx)
		kernCount.add(n0, n1, ok0 && ok1, cfg.Runs)
		return nil
	}
	floorRound := func() error {
		c0 := env.cpuNow()
		n0, ok0 := env.countersNow(ctx)
		rate, err := floorTimed(ctx, env, cfg, &floorSubmits)
		if err != nil {
			return err
		}
		floorRates = append(floorRates, rate)
		floorCPU.add(c0, env.cpuNow(), cfg.Runs)
		n1, ok1 := env.countersNow(ctx)
		floorCount.add(n0, n1, ok0 && ok1, cfg.Runs)
		return nil
	}
	if err := abba(max(cfg.Rounds, 1), kernRound, floorRound); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("%d runs, %d submitters, %d concurrent runs, zero-latency fake model over HTTP", cfg.Runs, cfg.Submitters, cfg.Concurrency)
	if len(kernRates) > 1 {
		note = fmt.Sprintf("median of %d alternating rounds %s; %s", len(kernRates), roundsList(kernRates), note)
	}
	out := append([]Result{{"end-to-end runs/s", fmt.Sprintf("%.0f", median(kernRates)), note}},
		floorResults(median(kernRates), median(floorRates), floorRates)...)
	out = append(out, Result{"submit latency under load p50 / p99: kern / floor",
		fmt.Sprintf("%s / %s against %s / %s", ms(pct(kernSubmits, 50)), ms(pct(kernSubmits, 99)), ms(pct(floorSubmits, 50)), ms(pct(floorSubmits, 99))),
		"every submit of the rounds above, from Run's call to its return"})
	out = append(out, cpuResults(kernCPU, floorCPU)...)
	return append(out, counterResults(kernCount, floorCount)...), nil
}

// abba runs rounds pairs of a and b in ABBA order, so a machine that
// speeds up or slows down over the rounds favours neither side.
func abba(rounds int, a, b func() error) error {
	for round := range rounds {
		first, second := a, b
		if round%2 == 1 {
			first, second = b, a
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundsList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// throughput submits cfg.Runs background runs answered with reply and
// returns runs/s from the first submit to the last terminal run.
func throughput(ctx context.Context, env Env, cfg Config, reply fakellm.Reply) (float64, error) {
	return throughputTimed(ctx, env, cfg, reply, nil)
}

// throughputTimed is throughput that also appends each submit's latency
// to submits (nil: not kept).
func throughputTimed(ctx context.Context, env Env, cfg Config, reply fakellm.Reply, submits *[]time.Duration) (float64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	env.Fake.Script(func(fakellm.Request) fakellm.Reply { return reply })
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	stop, err := newWorker(ctx, d, env, cfg, a)
	if err != nil {
		return 0, err
	}
	defer stop()

	return driveTimed(ctx, cfg, func() error {
		_, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
		return err
	}, submits, func() (int, error) {
		var finished, completed int
		err := d.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('completed','error','cancelled')),
			count(*) FILTER (WHERE status = 'completed') FROM kern_run`).Scan(&finished, &completed)
		if err == nil && finished == cfg.Runs && completed != cfg.Runs {
			err = fmt.Errorf("throughput: %d of %d runs completed", completed, cfg.Runs)
		}
		return finished, err
	})
}

// drive calls submit cfg.Runs times from cfg.Submitters goroutines, then
// polls finished until all runs are done, and returns runs/s over the whole.
func drive(ctx context.Context, cfg Config, submit func() error, finished func() (int, error)) (float64, error) {
	return driveTimed(ctx, cfg, submit, nil, finished)
}

// driveTimed is drive that also appends every submit's latency (under the
// round's load) to submits, unless it is nil.
func driveTimed(ctx context.Context, cfg Config, submit func() error, submits *[]time.Duration, finished func() (int, error)) (float64, error) {
	if cfg.pace > 0 {
		return drivePaced(ctx, cfg, submit, submits, finished)
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make(chan error, cfg.Submitters)
	for range cfg.Submitters {
		wg.Go(func() {
			var took []time.Duration
			defer func() {
				if submits != nil {
					mu.Lock()
					*submits = append(*submits, took...)
					mu.Unlock()
				}
			}()
			for next.Add(1) <= int64(cfg.Runs) {
				t0 := time.Now()
				if err := submit(); err != nil {
					errs <- err
					return
				}
				took = append(took, time.Since(t0))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return awaitFinished(ctx, cfg, start, finished)
}

// awaitFinished polls finished until all cfg.Runs are done and returns
// runs/s since start.
func awaitFinished(ctx context.Context, cfg Config, start time.Time, finished func() (int, error)) (float64, error) {
	for {
		n, err := finished()
		if err != nil {
			return 0, err
		}
		if n == cfg.Runs {
			return float64(cfg.Runs) / time.Since(start).Seconds(), nil
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
}
