// Background execution: kern's version of the Agno cookbook example
// background_execution.py, in three scenarios:
//
//  1. a background run, polled once a second until it completes;
//  2. a long background run, cancelled while it streams;
//  3. a run cancelled before it is even submitted, which never reaches the
//     model.
//
// It runs offline by default (fake model, throwaway Postgres); set
// OPENAI_API_KEY (and optionally OPENAI_BASE_URL, KERN_MODEL) for a real
// model, and DATABASE_URL for your own Postgres.
//
//	go run ./cookbook/background_execution
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"

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

	assistant := &agent.Agent{
		Name:         "assistant",
		Instructions: "You are a helpful assistant.",
		Model:        env.Model,
		DB:           env.DB,
	}
	// The worker would usually be another process (see cookbook/worker);
	// here it shares this one.
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

	for _, scenario := range []func(context.Context, *agent.Agent) error{
		backgroundWithPolling, cancelRunningRun, cancelBeforeStart,
	} {
		if err := scenario(ctx, assistant); err != nil {
			return err
		}
	}
	if env.Fake != nil {
		fmt.Printf("\nThe fake model served %d requests.\n", env.Fake.Count())
	}
	return nil
}

// backgroundWithPolling starts a run in the background and polls it once a
// second, for up to 30 seconds, until it completes or fails.
func backgroundWithPolling(ctx context.Context, a *agent.Agent) error {
	fmt.Println("=== 1. Background run with polling ===")
	out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
	if err != nil {
		return err
	}
	fmt.Printf("run %s started, status %s\n", out.RunID, out.Status)
	if out.Status != run.StatusPending {
		return fmt.Errorf("%w: a background run must start pending, got %s", demo.ErrScenario, out.Status)
	}
	for range 30 {
		time.Sleep(time.Second)
		out, err = a.GetRunOutput(ctx, out.RunID)
		if err != nil {
			return err
		}
		fmt.Printf("  status: %s\n", out.Status)
		switch out.Status {
		case run.StatusCompleted:
			fmt.Printf("content: %s\n", out.Content)
			fmt.Printf("tokens: %d in, %d out; first token after %v\n\n",
				out.Metrics.InputTokens, out.Metrics.OutputTokens, out.Metrics.TimeToFirstToken.Round(time.Millisecond))
			return nil
		case run.StatusError:
			return fmt.Errorf("%w: run failed: %s", demo.ErrScenario, out.Error)
		}
	}
	return fmt.Errorf("%w: run did not finish within 30 seconds", demo.ErrScenario)
}

// cancelRunningRun starts a long run, cancels it after two seconds, and
// shows that it ends cancelled with the content streamed so far.
func cancelRunningRun(ctx context.Context, a *agent.Agent) error {
	fmt.Println("=== 2. Cancel a background run ===")
	out, err := a.Run(ctx, "Write a 5000-word essay on the history of Paris.", agent.Background(true))
	if err != nil {
		return err
	}
	fmt.Printf("run %s started, status %s\n", out.RunID, out.Status)
	time.Sleep(2 * time.Second)
	if out, err = a.GetRunOutput(ctx, out.RunID); err != nil {
		return err
	}
	fmt.Printf("  after 2s: status %s, %d bytes streamed\n", out.Status, len(out.Content))

	ok, err := a.CancelRun(ctx, out.RunID)
	if err != nil {
		return err
	}
	fmt.Printf("CancelRun returned %v\n", ok)
	time.Sleep(time.Second)
	if out, err = a.GetRunOutput(ctx, out.RunID); err != nil {
		return err
	}
	fmt.Printf("final status: %s, kept %d bytes: %q…\n\n", out.Status, len(out.Content), preview(out.Content, 60))
	if ok && out.Status != run.StatusCancelled {
		return fmt.Errorf("%w: cancelled run ended %s", demo.ErrScenario, out.Status)
	}
	return nil
}

// cancelBeforeStart cancels a run id before any run has it, then submits a
// run with that id: the worker notices and the model is never called.
func cancelBeforeStart(ctx context.Context, a *agent.Agent) error {
	fmt.Println("=== 3. Cancel before start ===")
	runID := uuid.NewString()
	ok, err := a.CancelRun(ctx, runID)
	if err != nil {
		return err
	}
	fmt.Printf("CancelRun(%s) before start returned %v\n", runID, ok)

	out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true), agent.WithRunID(runID))
	if err != nil {
		return err
	}
	fmt.Printf("run %s submitted, initial status %s\n", out.RunID, out.Status)
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err = a.WaitRun(waitCtx, runID); err != nil {
		return err
	}
	fmt.Printf("final status: %s (content %q)\n", out.Status, out.Content)
	if out.Status != run.StatusCancelled {
		return fmt.Errorf("%w: pre-cancelled run ended %s", demo.ErrScenario, out.Status)
	}
	return nil
}

func preview(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
