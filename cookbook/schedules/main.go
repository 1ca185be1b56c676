// Schedules: a recurring run, stored in Postgres and fired by the workers
// that serve its agent. The program puts a schedule that fires every two
// seconds, lets it fire for a while, prints the runs it made and what they
// answered, and deletes it.
//
// Every worker serving the agent may fire a schedule; each due time makes
// exactly one run, and ticks missed while no worker ran fire once. A cron
// such as "0 7 * * *" with Timezone "Europe/Paris" works the same way.
//
// It runs offline by default (fake model, throwaway Postgres); set
// OPENAI_API_KEY (and optionally OPENAI_BASE_URL, KERN_MODEL) for a real
// model, and DATABASE_URL for your own Postgres.
//
//	go run ./cookbook/schedules
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/run"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := runAll(context.Background(), logger); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context, logger *slog.Logger) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()

	reporter := &agent.Agent{
		Name:         "reporter",
		Instructions: "You write one-line status reports.",
		Model:        env.Model,
		DB:           env.DB,
	}
	// The worker would usually be another process (see cookbook/worker);
	// here it shares this one. It fires the schedules of the agents it
	// serves, and executes their runs like any background run.
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{Logger: logger}, reporter)
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(stopCtx)
	}()

	s, err := env.DB.PutSchedule(ctx, run.Schedule{
		Name:      "status-report",
		AgentName: "reporter",
		Prompt:    "Write the status report.",
		Cron:      "@every 2s",
		SessionID: "reports",
		Metadata:  map[string]any{"source": "cookbook"},
	})
	if err != nil {
		return err
	}
	fmt.Printf("Schedule %q (%s) is next due at %s.\n", s.Name, s.Cron, s.NextRunAt.Format(time.TimeOnly))

	// Let it fire three times, then stop it.
	const firings = 3
	deadline := time.Now().Add(firings*2*time.Second + 15*time.Second)
	var runs []*run.Output
	for len(runs) < firings {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d of %d firings in time", demo.ErrScenario, len(runs), firings)
		}
		time.Sleep(200 * time.Millisecond)
		page, err := env.DB.ListRuns(ctx, run.ListParams{Name: s.Name})
		if err != nil {
			return err
		}
		runs = page.Runs
	}
	if err := env.DB.DeleteSchedule(ctx, s.Name); err != nil {
		return err
	}
	fmt.Printf("Deleted the schedule after %d firings.\n\n", len(runs))

	slices.Reverse(runs) // oldest first
	for _, r := range runs {
		out, err := reporter.WaitRun(ctx, r.RunID)
		if err != nil {
			return err
		}
		fmt.Printf("%s  run %s  %-9s  %q\n", out.CreatedAt.Format("15:04:05.000"), out.RunID, out.Status, out.Content)
	}
	if len(runs) > 1 {
		fmt.Printf("\nThe runs are %v apart: one per due time.\n", runs[1].CreatedAt.Sub(runs[0].CreatedAt).Round(100*time.Millisecond))
	}
	left, err := env.DB.ListSchedules(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("Schedules left: %d.\n", len(left))
	if env.Fake != nil {
		fmt.Printf("The fake model served %d requests.\n", env.Fake.Count())
	}
	return nil
}
