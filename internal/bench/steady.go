package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/kern-go/kern/internal/fakellm"
)

// maxPacedInFlight bounds the submits outstanding in an open-loop round; a
// side that falls this far behind waits, and the wait counts in its
// latencies (they are taken from when a submit was due).
const maxPacedInFlight = 1024

// steadySubmit: submit latency at the same offered load on both sides.
//
// The end-to-end figure's submit latency is taken with Submitters
// goroutines submitting as fast as they can (closed loop), so each side is
// measured at its own rate: the faster one is also the more loaded, and a
// tail there says as much about the rate as about the submit. Here kern and
// the floor get the same schedule — a submit every 1/SteadyRate s, open
// loop, whether or not earlier ones have returned — and each submit is
// timed from when it was due, so a stall is charged to every submit it held
// up (no coordinated omission). Rounds alternate (ABBA), after a warm-up
// round of each.
func steadySubmit(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	rate := cfg.SteadyRate
	if rate <= 0 {
		rate = 800
	}
	paced := cfg
	paced.pace = float64(rate)
	paced.Runs = max(min(cfg.Runs, rate*5), 50) // about 5 s a round
	reply := fakellm.Reply{Content: "The capital of France is Paris."}

	warm := paced
	warm.Runs = max(paced.Runs/10, 50)
	if _, err := throughput(ctx, env, warm, reply); err != nil {
		return nil, err
	}
	if _, err := floor(ctx, env, warm); err != nil {
		return nil, err
	}
	var kernSubmits, floorSubmits []time.Duration
	var kernRates, floorRates []float64
	kernRound := func() error {
		r, err := throughputTimed(ctx, env, paced, reply, &kernSubmits)
		kernRates = append(kernRates, r)
		return err
	}
	floorRound := func() error {
		r, err := floorTimed(ctx, env, paced, &floorSubmits)
		floorRates = append(floorRates, r)
		return err
	}
	if err := abba(max(cfg.Rounds/2, 2), kernRound, floorRound); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("%d runs a round, %d rounds a side (ABBA), open loop, timed from when each submit was due", paced.Runs, len(kernRates))
	return []Result{
		{fmt.Sprintf("submit latency at a steady %d runs/s p50 / p99: kern / floor", rate),
			fmt.Sprintf("%s / %s against %s / %s", ms(pct(kernSubmits, 50)), ms(pct(kernSubmits, 99)), ms(pct(floorSubmits, 50)), ms(pct(floorSubmits, 99))), note},
		{fmt.Sprintf("submit latency at a steady %d runs/s p99.9 / max: kern / floor", rate),
			fmt.Sprintf("%s / %s against %s / %s", ms(pctile(kernSubmits, 99.9)), ms(pctile(kernSubmits, 100)), ms(pctile(floorSubmits, 99.9)), ms(pctile(floorSubmits, 100))), ""},
		{"runs/s achieved at that load: kern / floor", fmt.Sprintf("%s / %s", roundsList(kernRates), roundsList(floorRates)),
			"first submit to last terminal run; the offered rate when a side keeps up"},
	}, nil
}

// drivePaced submits cfg.Runs runs open loop at cfg.pace runs/s: run i is
// due at start + i/pace, whether or not earlier submits have returned, and
// its latency is from when it was due to its return. Then it waits for all
// runs to finish, as drive does.
func drivePaced(ctx context.Context, cfg Config, submit func() error, submits *[]time.Duration, finished func() (int, error)) (float64, error) {
	interval := time.Duration(float64(time.Second) / cfg.pace)
	took := make([]time.Duration, cfg.Runs)
	slots := make(chan struct{}, maxPacedInFlight)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	start := time.Now()
	var err error
	for i := range cfg.Runs {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			if err = sleep(ctx, wait); err != nil {
				break
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := submit(); err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			took[i] = time.Since(due)
		})
	}
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	if err != nil {
		return 0, err
	}
	if submits != nil {
		*submits = append(*submits, took...)
	}
	return awaitFinished(ctx, cfg, start, finished)
}

// pctile is pct for a fractional percentile (99.9); 100 is the maximum.
func pctile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s)) * p / 100))
	return s[max(0, min(len(s)-1, i-1))]
}
