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
		names               []string
		model, instructions string
		retention           time.Duration
		cfg                 agent.WorkerConfig
		shutdown            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Work background runs of one or more agents until SIGINT/SIGTERM",
		Long: `Runs a worker process for the agents named by --agent (repeat it, or give a
comma-separated list, to serve several with one model and one total
--concurrency). Start as many as you like, on any hosts, against the same
database, serving the same or different agents: each run reaches only a
worker that serves its agent, and exactly one of them. On SIGINT or
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
			cfg.Retention = retention
			agents := make([]*agent.Agent, 0, len(names))
			for _, name := range names {
				agents = append(agents, &agent.Agent{Name: name, Instructions: instructions, Model: chat, DB: d})
			}
			w, err := agent.NewWorker(d, cfg, agents...)
			if err != nil {
				return err
			}
			// The worker's own context must outlive the signal: the signal
			// starts a graceful stop, it does not cut running runs.
			if err := w.Start(context.WithoutCancel(ctx)); err != nil {
				return err
			}
			cfg.Logger.Info("kern worker started", slog.Any("agents", names), slog.String("model", model))
			<-ctx.Done()
			cfg.Logger.Info("kern worker stopping", slog.Duration("grace", shutdown))
			stopCtx, cancel := context.WithTimeout(context.Background(), shutdown)
			defer cancel()
			return w.Stop(stopCtx)
		},
	}
	cmd.Flags().StringSliceVar(&names, "agent", []string{"assistant"}, "agent name(s) to serve (must match the submitting side); repeat or comma-separate for several")
	cmd.Flags().StringVar(&model, "model", envOr("KERN_MODEL", "gpt-5-mini"), "model id (default $KERN_MODEL or gpt-5-mini)")
	cmd.Flags().StringVar(&instructions, "instructions", "", "system instructions")
	cmd.Flags().IntVar(&cfg.MaxConcurrentRuns, "concurrency", 5, "runs executed at once, in total across the agents")
	cmd.Flags().DurationVar(&retention, "retention", 24*time.Hour, "delete finished runs this long after they finished; negative keeps them forever")
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
