package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/run"
)

// schedules: how late a recurring schedule fires. An "@every 1s"
// schedule of an agent one worker serves (kern's defaults); for each
// firing, from its due time (the schedule's NextRunAt before it fired) to
// the fired run's created_at — both Postgres's clock, so no clock skew is
// in the figure. created_at is the firing transaction's start: its commit
// follows within that transaction's few statements.
func schedules(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	defaults := cfg
	defaults.FetchCooldown, defaults.FetchPollInterval, defaults.Concurrency = 0, 0, 0
	stop, err := newWorker(ctx, d, env, defaults, a)
	if err != nil {
		return nil, err
	}
	defer stop()

	firings := min(max(cfg.Samples/10, 3), 30)
	s, err := d.PutSchedule(ctx, run.Schedule{Name: "bench-every-second", AgentName: "bench", Prompt: "tick", Cron: "@every 1s"})
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.DeleteSchedule(context.WithoutCancel(ctx), s.Name) }()
	due, last := s.NextRunAt, s.LastRunID
	delays := make([]time.Duration, 0, firings)
	deadline := time.Now().Add(time.Duration(firings)*time.Second + 30*time.Second)
	for len(delays) < firings {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("schedules: %d of %d firings in time", len(delays), firings)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
		list, err := d.ListSchedules(ctx)
		if err != nil {
			return nil, err
		}
		if len(list) != 1 {
			return nil, fmt.Errorf("schedules: %d schedules", len(list))
		}
		now := list[0]
		if now.LastRunID == last {
			continue
		}
		out, err := d.GetRun(ctx, now.LastRunID)
		if err != nil {
			return nil, err
		}
		delays = append(delays, out.CreatedAt.Sub(due))
		due, last = now.NextRunAt, now.LastRunID
	}
	note := fmt.Sprintf("%d firings of an @every 1s schedule, one worker, default settings; due time → run row created", firings)
	return []Result{
		{"schedule firing delay p50", ms(pct(delays, 50)), note},
		{"schedule firing delay p99", ms(pct(delays, 99)), ""},
	}, nil
}
