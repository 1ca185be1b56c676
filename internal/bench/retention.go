package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// retentionPass is agent's retentionPause: the pause a worker's pass makes
// between its batches.
const retentionPass = 25 * time.Millisecond

// retentionAge is how old the filled runs are; the deleting worker keeps
// runs for an hour, so every one of them has expired.
const retentionAge = 2 * 24 * time.Hour

// retention: what a worker deleting RetentionRows expired runs costs the
// runs flowing meanwhile. The table is filled with RetentionRows runs that
// finished two days ago (three events each, as the bounded delete figure
// has them); then runs flow at 100/s, at the default WorkerConfig, twice:
// with a worker that keeps runs forever (Retention negative: no deletion),
// then while a retention pass deletes them (the DeleteRuns call of a
// worker whose Retention is an hour, made as the flow starts). The figures are submit latency (Run) and submit → terminal (Run
// called → WaitRun returning), how long the deletion took (the expired rows
// polled until none is left) and that no run of the flow was deleted.
func retention(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	n := cfg.RetentionRows
	if n == 0 {
		return nil, nil
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	start := time.Now()
	if _, err := d.Pool().Exec(ctx, `
		WITH runs AS (
			INSERT INTO kern_run (id, agent_name, input, status, content, attempt, execution, event_seq,
				created_at, started_at, finished_at)
			SELECT 'expired-' || i, 'bench', 'What is the capital of France?', 'completed',
				'The capital of France is Paris.', 1, 1, 3, t, t, t
			FROM generate_series(1, $1::int) i,
				LATERAL (SELECT now() - make_interval(secs => $2) + i * interval '1 millisecond' AS t) ts
			RETURNING id
		)
		INSERT INTO kern_run_event (run_id, seq, type) SELECT id, s, 'run.x' FROM runs, generate_series(1, 3) s`,
		n, retentionAge.Seconds()); err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `ANALYZE kern_run; ANALYZE kern_run_event`); err != nil {
		return nil, err
	}
	fill := time.Since(start)

	env.Fake.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Content: "ok"} })
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	defaults := cfg
	defaults.FetchCooldown, defaults.FetchPollInterval, defaults.Concurrency = 0, 0, 0
	// At the default -samples (500), 1,000 runs a side: ten seconds at 100/s.
	perSide := max(cfg.Samples*2, 20)
	var live []string

	// Retention idle: a short warm-up that is not counted, then the flow.
	keep := defaults
	keep.retention = -1
	stop, err := newWorker(ctx, d, env, keep, a)
	if err != nil {
		return nil, err
	}
	if _, err := flow(ctx, a, max(perSide/10, 10), "warm-up"); err != nil {
		stop()
		return nil, err
	}
	idle, err := flow(ctx, a, perSide, "idle")
	stop()
	if err != nil {
		return nil, err
	}
	for _, s := range idle {
		live = append(live, s.runID)
	}

	// Deleting: a retention pass starts as the flow does — the very call a
	// worker's pass makes (agent/retention.go: Retain with its Retention and
	// pause), made here rather than waiting for a worker's first
	// pass, which comes 30–90 s after it starts — and the expired rows are
	// polled until none is left.
	deleting := defaults
	deleting.retention = -1
	t0 := time.Now()
	stop, err = newWorker(ctx, d, env, deleting, a)
	if err != nil {
		return nil, err
	}
	defer stop()
	passCtx, endPass := context.WithCancel(ctx)
	defer endPass()
	go func() { _, _ = d.Engine(engine.Key{}).Retain(passCtx, time.Hour, retentionPass) }()
	deadline := 15 * time.Minute
	type polled struct {
		took time.Duration
		left int
		err  error
	}
	gone := make(chan polled, 1)
	go func() {
		pollCtx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		for {
			var expired bool
			err := d.Pool().QueryRow(pollCtx, `SELECT EXISTS (SELECT 1 FROM kern_run WHERE finished_at < now() - interval '1 hour')`).Scan(&expired)
			if err == nil && !expired {
				gone <- polled{took: time.Since(t0)}
				return
			}
			if err == nil {
				err = sleep(pollCtx, 100*time.Millisecond)
			}
			if err != nil {
				p := polled{took: time.Since(t0), err: err}
				if pollCtx.Err() != nil { // the deadline: how far it got
					p.err = d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE id LIKE 'expired-%'`).Scan(&p.left)
				}
				gone <- p
				return
			}
		}
	}()
	during, err := flow(ctx, a, perSide, "deleting")
	if err != nil {
		return nil, err
	}
	for _, s := range during {
		live = append(live, s.runID)
	}
	del := <-gone
	if del.err != nil {
		return nil, fmt.Errorf("retention: polling the expired runs: %w", del.err)
	}
	// Only the runs submitted while the deletion went on count as
	// "deleting", should it end before the flow.
	var overlapped []sample
	for _, s := range during {
		if s.submitted.Sub(t0) < del.took {
			overlapped = append(overlapped, s)
		}
	}

	var kept, expiredRuns, expiredEvents int
	if err := d.Pool().QueryRow(ctx, `SELECT
			(SELECT count(*) FROM kern_run WHERE id = ANY($1)),
			(SELECT count(*) FROM kern_run WHERE id LIKE 'expired-%'),
			(SELECT count(*) FROM kern_run_event WHERE run_id LIKE 'expired-%')`, live).
		Scan(&kept, &expiredRuns, &expiredEvents); err != nil {
		return nil, err
	}
	if kept != len(live) {
		return nil, fmt.Errorf("retention: %d of the %d runs of the flow were deleted", len(live)-kept, len(live))
	}
	if del.left == 0 && (expiredRuns != 0 || expiredEvents != 0) {
		return nil, fmt.Errorf("retention: %d expired runs and %d of their events left", expiredRuns, expiredEvents)
	}

	label := countLabel(n)
	submitLat := func(ss []sample) []time.Duration { return pick(ss, func(s sample) time.Duration { return s.submit }) }
	e2eLat := func(ss []sample) []time.Duration { return pick(ss, func(s sample) time.Duration { return s.e2e }) }
	both := func(f func([]sample) []time.Duration) string {
		i, o := f(idle), f(overlapped)
		return fmt.Sprintf("%.2f / %.2f ms | %.2f / %.2f ms", msf(pct(i, 50)), msf(pct(i, 99)), msf(pct(o, 50)), msf(pct(o, 99)))
	}
	deleted := Result{fmt.Sprintf("%s expired runs deleted in", label), fmt.Sprintf("%.1f s", del.took.Seconds()),
		fmt.Sprintf("from the worker's start to none left (polled every 100ms), 3 events each, %.0f runs/s; table filled in %v",
			float64(n)/del.took.Seconds(), fill.Round(time.Second))}
	if del.left > 0 {
		deleted = Result{fmt.Sprintf("%s expired runs deleted in", label), fmt.Sprintf("> %v", deadline),
			fmt.Sprintf("deadline: %d of %d deleted (%.0f runs/s)", n-del.left, n, float64(n-del.left)/del.took.Seconds())}
	}
	return []Result{
		{fmt.Sprintf("submit p50/p99 at 100 runs/s, retention idle / deleting %s", label),
			both(submitLat),
			fmt.Sprintf("%d runs 10ms apart each side, default WorkerConfig, zero-latency fake model; %d of the deleting side's runs were submitted before the deletion ended",
				perSide, len(overlapped))},
		{fmt.Sprintf("end-to-end p50/p99 at 100 runs/s, retention idle / deleting %s", label),
			both(e2eLat), "Run called → WaitRun returning the completed run"},
		deleted,
		{"live runs deleted by retention", fmt.Sprintf("0 of %d", len(live)), "the runs of both flows, finished within the hour"},
	}, nil
}

// sample is one run of a flow: when it was submitted, how long Run took and
// how long until WaitRun returned it completed.
type sample struct {
	runID       string
	submitted   time.Time
	submit, e2e time.Duration
}

// flow submits runs background runs 10 ms apart (100/s), each from a
// goroutine of its own at its moment, so a slow submit delays no other, and
// waits for each to complete.
func flow(ctx context.Context, a *agent.Agent, runs int, name string) ([]sample, error) {
	out := make([]sample, runs)
	errs := make(chan error, runs)
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range runs {
		if err := sleep(ctx, time.Until(begin.Add(time.Duration(i)*10*time.Millisecond))); err != nil {
			return nil, err
		}
		wg.Go(func() {
			t0 := time.Now()
			o, err := a.Run(ctx, fmt.Sprintf("%s %d", name, i), agent.Background(true))
			if err != nil {
				errs <- err
				return
			}
			submitted := time.Since(t0)
			waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			o, err = a.WaitRun(waitCtx, o.RunID)
			if err == nil && o.Status != run.StatusCompleted {
				err = fmt.Errorf("retention: run %s is %s: %s", o.RunID, o.Status, o.Error)
			}
			if err != nil {
				errs <- err
				return
			}
			out[i] = sample{runID: o.RunID, submitted: t0, submit: submitted, e2e: time.Since(t0)}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pick(ss []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// countLabel is n as the figures name it: 1M, 2k, 1500.
func countLabel(n int) string {
	switch {
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
