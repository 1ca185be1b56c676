package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// recoveryRunsPerRound runs are in flight on the worker that is killed.
const recoveryRunsPerRound = 10

// recovery: per round, a worker process (default WorkerConfig: RescueAfter
// 30s, heartbeat 5s) streams recoveryRunsPerRound slow runs and is killed
// with SIGKILL; a second process rescues and completes them. The figure is
// from the kill to each run completing elsewhere.
func recovery(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if cfg.RecoveryRounds == 0 || env.SpawnWorker == nil {
		return nil, nil
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	url := env.DatabaseURL(d)
	env.Fake.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(req.Model, "victim") {
			return fakellm.Reply{Content: fakellm.LoremWords(2000), Drip: 50 * time.Millisecond}
		}
		return fakellm.Reply{Content: "recovered"}
	})
	submitter := &agent.Agent{Name: "bench", Model: env.Model, DB: d}

	var samples []time.Duration
	var lost, doubled int
	for round := range cfg.RecoveryRounds {
		spawn := func(name string) (*WorkerProcess, error) { return env.SpawnWorker(name, url, 20) }
		got, l, dbl, err := killRound(ctx, env, d, submitter, recoveryRunsPerRound, spawn, round)
		if err != nil {
			return nil, err
		}
		samples, lost, doubled = append(samples, got...), lost+l, doubled+dbl
	}
	return []Result{
		{"recovery after SIGKILL p50", fmt.Sprintf("%.1f s", pct(samples, 50).Seconds()),
			fmt.Sprintf("%d runs on %d killed workers, default RescueAfter 30s", len(samples), cfg.RecoveryRounds)},
		{"recovery after SIGKILL max", fmt.Sprintf("%.1f s", pct(samples, 100).Seconds()), ""},
		{"runs lost / doubled", fmt.Sprintf("%d / %d", lost, doubled), "a doubled run would have two terminal events"},
	}, nil
}

// killRound spawns a worker process "victim-<round>", submits runs
// through submitter, waits until each has reached the model (the script
// streams a victim's runs at length), spawns "survivor-<round>", SIGKILLs
// the victim and waits for every run. It returns, for each run the
// survivor completed, the time from the kill to its completion, and how
// many runs were lost (not completed with "recovered") or doubled (more
// than one terminal event).
func killRound(ctx context.Context, env Env, d *db.DB, submitter *agent.Agent, runs int,
	spawn func(name string) (*WorkerProcess, error), round int) (samples []time.Duration, lost, doubled int, err error) {
	victim, err := spawn(fmt.Sprintf("victim-%d", round))
	if err != nil {
		return nil, 0, 0, err
	}
	killVictim := victim.Kill
	before := env.Fake.Count()
	ids := make([]string, runs)
	for i := range ids {
		out, err := submitter.Run(ctx, "write at length", agent.Background(true))
		if err != nil {
			killVictim()
			return nil, 0, 0, err
		}
		ids[i] = out.RunID
	}
	if err := env.Fake.WaitRequests(ctx, before+runs); err != nil {
		killVictim()
		return nil, 0, 0, err
	}
	survivor, err := spawn(fmt.Sprintf("survivor-%d", round))
	if err != nil {
		killVictim()
		return nil, 0, 0, err
	}
	defer survivor.Kill()
	killVictim()
	killed := time.Now()
	for _, id := range ids {
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		out, err := submitter.WaitRun(waitCtx, id)
		cancel()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("recovery: run %s: %w", id, err)
		}
		if out.Status != run.StatusCompleted || out.Content != "recovered" {
			lost++
			continue
		}
		samples = append(samples, out.FinishedAt.Sub(killed))
		if n, err := terminalEvents(ctx, d, id); err != nil || n != 1 {
			doubled++
		}
	}
	return samples, lost, doubled, nil
}

func terminalEvents(ctx context.Context, d *db.DB, runID string) (int, error) {
	var n int
	err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_event WHERE run_id = $1
		AND type IN ('run.completed', 'run.error', 'run.cancelled')`, runID).Scan(&n)
	return n, err
}
