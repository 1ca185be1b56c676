package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/agent"
)

func newWorkerCmd(flags *rootFlags) *cobra.Command {
	var (
		name, model, instructions string
		cfg                       agent.WorkerConfig
		shutdown                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Work background runs of one agent until SIGINT/SIGTERM",
		Long: `Runs a worker process. Start as many as you like, on any hosts, against the
same database: River hands each run to exactly one of them. On SIGINT or
SIGTERM the worker stops taking runs, lets running ones finish for
--shutdown-timeout, then hands the rest back to pending for another worker.

The model is reached through OPENAI_BASE_URL (any OpenAI-compatible
endpoint: Ollama, vLLM, cmd/fakellm; unset means OpenAI's API) and
OPENAI_API_KEY, which only OpenAI's API requires: a local endpoint needs no
key, and gets one sent only if it is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Before touching the database: a missing key is a setup mistake
			// to report at once, not after connecting, nor on every run. The
			// resolved client is then shared by all runs of this worker.
			chat, err := agent.OpenAIChat{ID: model}.Resolve()
			if err != nil {
				return err // already says which variable to set
			}
			ctx := cmd.Context()
			d, err := flags.open(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			a := &agent.Agent{Name: name, Instructions: instructions, Model: chat, DB: d}
			w, err := agent.NewWorker(d, cfg, a)
			if err != nil {
				return err
			}
			// The worker's own context must outlive the signal: the signal
			// starts a graceful stop, it does not cut running runs.
			if err := w.Start(context.WithoutCancel(ctx)); err != nil {
				return err
			}
			cfg.Logger.Info("kern worker started", slog.String("agent", name), slog.String("model", model))
			<-ctx.Done()
			cfg.Logger.Info("kern worker stopping", slog.Duration("grace", shutdown))
			stopCtx, cancel := context.WithTimeout(context.Background(), shutdown)
			defer cancel()
			return w.Stop(stopCtx)
		},
	}
	cmd.Flags().StringVar(&name, "agent", "assistant", "agent name (must match the submitting side)")
	cmd.Flags().StringVar(&model, "model", envOr("KERN_MODEL", "gpt-5-mini"), "model id (default $KERN_MODEL or gpt-5-mini)")
	cmd.Flags().StringVar(&instructions, "instructions", "", "system instructions")
	cmd.Flags().IntVar(&cfg.MaxConcurrentRuns, "concurrency", 5, "runs executed at once")
	cmd.Flags().DurationVar(&cfg.DefaultTimeout, "timeout", 5*time.Minute, "default run timeout")
	cmd.Flags().IntVar(&cfg.MaxAttempts, "max-attempts", 3, "executions of a run (retries and rescues each use one)")
	cmd.Flags().DurationVar(&cfg.RescueAfter, "rescue-after", 30*time.Second, "heartbeat age after which another worker takes a run over")
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 30*time.Second, "grace period for running runs on SIGTERM")
	return cmd
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
