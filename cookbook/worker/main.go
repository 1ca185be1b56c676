// A worker process: what you deploy, as many times as you like, next to the
// application that submits runs. It serves one agent from the same database
// (runs of other agents never reach it; pass several agents to NewWorker to
// serve them all)
// and stops gracefully on SIGINT or SIGTERM — runs in progress get up to 30
// seconds to finish; the rest are handed back to pending for another worker
// (without using up an attempt). Nothing is lost when it is killed outright
// either: its Postgres session ends with its process, and another worker
// re-queues its runs within about a second; the heartbeat (runs older than
// RescueAfter, 30s) is the fallback, for a host cut off without its
// connections closing.
//
//	DATABASE_URL=postgres://… OPENAI_API_KEY=… go run ./cookbook/worker
//
// OPENAI_BASE_URL points it at any OpenAI-compatible endpoint (Ollama, vLLM,
// or `go run ./cmd/fakellm`), which needs no OPENAI_API_KEY; KERN_MODEL
// picks the model.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
)

func main() {
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func serve() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return errors.New("set DATABASE_URL")
	}
	d, err := db.Open(ctx, url)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil { // idempotent; safe from many processes at once
		return err
	}

	model := os.Getenv("KERN_MODEL")
	if model == "" {
		model = "gpt-5-mini"
	}
	assistant := &agent.Agent{
		Name:         "assistant", // the submitting side uses the same name
		Instructions: "You are a helpful assistant.",
		Model:        agent.OpenAIChat{ID: model}, // OPENAI_API_KEY, OPENAI_BASE_URL
	}
	worker, err := agent.NewWorker(d, agent.WorkerConfig{MaxConcurrentRuns: 10, Logger: logger}, assistant)
	if err != nil {
		return err
	}
	// Not ctx: the signal starts a graceful stop, it must not cut runs off.
	if err := worker.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	logger.Info("worker started", slog.String("model", model))

	<-ctx.Done()
	logger.Info("stopping: letting running runs finish")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return worker.Stop(stopCtx)
}
