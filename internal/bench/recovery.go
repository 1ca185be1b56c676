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
		victim, err := env.SpawnWorker(fmt.Sprintf("victim-%d", round), url, 20)
		if err != nil {
			return nil, err
		}
		killVictim := victim.Kill
		before := env.Fake.Count()
		ids := make([]string, recoveryRunsPerRound)
		for i := range ids {
			out, err := submitter.Run(ctx, "write at length", agent.Background(true))
			if err != nil {
				killVictim()
				return nil, err
			}
			ids[i] = out.RunID
		}
		if err := env.Fake.WaitRequests(ctx, before+recoveryRunsPerRound); err != nil {
			killVictim()
			return nil, err
		}
		survivor, err := env.SpawnWorker(fmt.Sprintf("survivor-%d", round), url, 20)
		if err != nil {
			killVictim()
			return nil, err
		}
		killSurvivor := survivor.Kill
		killVictim()
		killed := time.Now()
		for _, id := range ids {
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			out, err := submitter.WaitRun(waitCtx, id)
			cancel()
			if err != nil {
				killSurvivor()
				return nil, fmt.Errorf("recovery: run %s: %w", id, err)
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
		killSurvivor()
	}
	return []Result{
		{"recovery after SIGKILL p50", fmt.Sprintf("%.1f s", pct(samples, 50).Seconds()),
			fmt.Sprintf("%d runs on %d killed workers, default RescueAfter 30s", len(samples), cfg.RecoveryRounds)},
		{"recovery after SIGKILL max", fmt.Sprintf("%.1f s", pct(samples, 100).Seconds()), ""},
		{"runs lost / doubled", fmt.Sprintf("%d / %d", lost, doubled), "a doubled run would have two terminal events"},
	}, nil
}

func terminalEvents(ctx context.Context, d *db.DB, runID string) (int, error) {
	var n int
	err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_event WHERE run_id = $1
		AND type IN ('run.completed', 'run.error', 'run.cancelled')`, runID).Scan(&n)
	return n, err
}
