// Sessions: runs that remember. With Agent.HistoryRuns = N, a run submitted
// WithSessionID gets the last N finished runs of the same session and agent
// as user/assistant messages before its prompt: the conversation so far,
// read from the run rows, one row per run (fifty concurrent runs of one
// session are fifty independent rows; nothing rewrites a session blob).
// Another session never sees them.
//
// It runs offline by default; the fake model cannot remember, so the
// example prints what the model was sent. Set OPENAI_API_KEY (and
// optionally OPENAI_BASE_URL, KERN_MODEL) for a real model, which answers
// "Ada", and DATABASE_URL for your own Postgres.
//
//	go run ./cookbook/sessions
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/internal/fakellm"
)

func main() {
	if err := runAll(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()

	assistant := &agent.Agent{
		Name:         "companion",
		Instructions: "You are a friendly assistant. Keep answers short.",
		Model:        env.Model,
		DB:           env.DB,
		HistoryRuns:  10,
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{Logger: logger}, assistant)
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

	ask := func(session, prompt string) error {
		out, err := assistant.Run(ctx, prompt, agent.Background(true), agent.WithSessionID(session))
		if err != nil {
			return err
		}
		if out, err = assistant.WaitRun(ctx, out.RunID); err != nil {
			return err
		}
		fmt.Printf("[%s] %s\n   → %s: %s\n", session, prompt, out.Status, out.Content)
		if env.Fake != nil {
			printSent(env.Fake)
		}
		return nil
	}
	for _, step := range []struct{ session, prompt string }{
		{"ada", "Hello! My name is Ada."},
		{"ada", "I like mathematics."},
		{"ada", "What is my name, and what do I like?"},
		{"grace", "What is my name?"}, // another session: no history
	} {
		if err := ask(step.session, step.prompt); err != nil {
			return err
		}
	}
	return nil
}

// printSent shows the messages of the fake model's last request: the
// instructions, the session's history, the new prompt.
func printSent(fake *fakellm.Server) {
	reqs := fake.Requests()
	if len(reqs) == 0 {
		return
	}
	last := reqs[len(reqs)-1]
	fmt.Printf("   the model was sent %d messages:\n", len(last.Messages))
	for _, m := range last.Messages {
		fmt.Printf("     %-9s %s\n", m.Role, m.Content)
	}
}
