package main

import (
	"context"
	"fmt"
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
		configPath          string
		metricsAddr         string
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
key, and gets one sent only if it is set.

With --config, the agents and the worker's settings come from a YAML file
instead (see "Workers without Go" in the README): each agent its own
instructions, model, API ("chat" or "responses"), base_url and key
variable. A file that does not parse or check is reported with its line,
and nothing starts.`,
		Example: `  kern worker --agent assistant --model gpt-5-mini --concurrency 10
  kern worker --agent writer,editor --instructions "Be brief."
  OPENAI_BASE_URL=http://127.0.0.1:8089/v1 kern worker --agent assistant
  kern worker --config agents.yaml        # agents and settings from a file
  kern worker --config agents.yaml --concurrency 20   # a flag given overrides the file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				agents []*agent.Agent
				file   *workerFile
				err    error
			)
			// Not cobra's flag groups: their errors name no flag as typed.
			if configPath != "" {
				for _, f := range []string{"agent", "model", "instructions"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--config and --%s do not mix: with --config the file names the agents, with their models and instructions", f)
					}
				}
			}
			// Everything that can be wrong with the setup is reported before
			// touching the database: a bad file or a missing key is a mistake
			// to report at once, not after connecting, nor on every run.
			if configPath != "" {
				if file, err = loadWorkerFile(configPath); err != nil {
					return err
				}
				fileCfg, err := file.workerConfig()
				if err != nil {
					return fmt.Errorf("%s: %w", configPath, err)
				}
				names = file.names()
				// Flags given explicitly override the file.
				fl := cmd.Flags()
				over := func(name string, fromFile, fromFlag any) {
					if !fl.Changed(name) {
						switch p := fromFlag.(type) {
						case *int:
							*p = *fromFile.(*int)
						case *time.Duration:
							*p = *fromFile.(*time.Duration)
						}
					}
				}
				over("concurrency", &fileCfg.MaxConcurrentRuns, &cfg.MaxConcurrentRuns)
				over("timeout", &fileCfg.DefaultTimeout, &cfg.DefaultTimeout)
				over("max-attempts", &fileCfg.MaxAttempts, &cfg.MaxAttempts)
				over("rescue-after", &fileCfg.RescueAfter, &cfg.RescueAfter)
				over("retention", &fileCfg.Retention, &retention)
				if !fl.Changed("shutdown-timeout") && file.Worker.ShutdownTimeout > 0 {
					shutdown = file.Worker.ShutdownTimeout
				}
				cfg.MaxContentBytes = fileCfg.MaxContentBytes
				cfg.MaxRunsPerKey = fileCfg.MaxRunsPerKey
				cfg.HeartbeatInterval = fileCfg.HeartbeatInterval
				cfg.RetryBaseDelay = fileCfg.RetryBaseDelay
				cfg.WebhookSecret = fileCfg.WebhookSecret
				cfg.AllowPrivateWebhooks = cfg.AllowPrivateWebhooks || fileCfg.AllowPrivateWebhooks
				// Agents need their DB; check their keys now, build them below.
				if _, err := file.buildAgents(nil); err != nil {
					return fmt.Errorf("%s: %w", configPath, err)
				}
			} else {
				// The resolved client is shared by all runs of this worker.
				chat, err := agent.OpenAIChat{ID: model}.Resolve()
				if err != nil {
					return err // already says which variable to set
				}
				for _, name := range names {
					agents = append(agents, &agent.Agent{Name: name, Instructions: instructions, Model: chat})
				}
			}
			ctx := cmd.Context()
			d, err := flags.open(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			if file != nil {
				if agents, err = file.buildAgents(d); err != nil {
					return err
				}
			}
			for _, a := range agents {
				a.DB = d
			}
			cfg.Logger = newLogger()
			cfg.Retention = retention
			// The worker uses otel's global providers, set here.
			tel, stopTel, err := setupTelemetry(ctx, "kern-worker", cfg.Logger)
			if err != nil {
				return err
			}
			defer stopTel()
			if metricsAddr != "" {
				stopMetrics, err := serveMetrics(metricsAddr, tel.Metrics, cfg.Logger)
				if err != nil {
					return err
				}
				defer stopMetrics()
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
			logAttrs := []any{slog.Any("agents", names)}
			if file != nil {
				logAttrs = append(logAttrs, slog.String("config", configPath))
			} else {
				logAttrs = append(logAttrs, slog.String("model", model))
			}
			cfg.Logger.Info("kern worker started", logAttrs...)
			<-ctx.Done()
			cfg.Logger.Info("kern worker stopping", slog.Duration("grace", shutdown))
			stopCtx, cancel := context.WithTimeout(context.Background(), shutdown)
			defer cancel()
			if err := w.Stop(stopCtx); err != nil {
				return err
			}
			cfg.Logger.Info("kern worker stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "agents.yaml declaring the agents (name, instructions, model, api, base_url, …) and worker settings; excludes --agent, --model, --instructions")
	cmd.Flags().StringSliceVar(&names, "agent", []string{"assistant"}, "agent name(s) to serve (must match the submitting side); repeat or comma-separate for several")
	cmd.Flags().StringVar(&model, "model", envOr("KERN_MODEL", "gpt-5-mini"), "model id (default $KERN_MODEL or gpt-5-mini)")
	cmd.Flags().StringVar(&instructions, "instructions", "", "system instructions")
	cmd.Flags().IntVar(&cfg.MaxConcurrentRuns, "concurrency", 5, "runs executed at once, in total across the agents")
	cmd.Flags().DurationVar(&retention, "retention", 24*time.Hour, "delete finished runs this long after they finished; negative keeps them forever")
	cmd.Flags().DurationVar(&cfg.DefaultTimeout, "timeout", 5*time.Minute, "default run timeout")
	cmd.Flags().IntVar(&cfg.MaxAttempts, "max-attempts", 3, "executions of a run (retries and rescues each use one)")
	cmd.Flags().DurationVar(&cfg.RescueAfter, "rescue-after", 30*time.Second, "heartbeat age after which another worker takes a run over")
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 30*time.Second, "grace period for running runs on SIGTERM")
	cmd.Flags().BoolVar(&cfg.AllowPrivateWebhooks, "allow-private-webhooks", false, "let tenants' webhooks connect to loopback, private and other non-public addresses (as kern serve --allow-private-webhooks)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics at GET /metrics on this address (e.g. 127.0.0.1:9090); traces go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set")
	return cmd
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
