// Streaming: follow a background run's events live, drop the reader half
// way (as a browser tab or a flaky connection would), and resume from the
// last seq seen — nothing lost, nothing repeated.
//
// Offline by default (fake model, throwaway Postgres); see
// cookbook/background_execution for the environment variables.
//
//	go run ./cookbook/streaming
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/run"
)

func main() {
	if err := stream(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func stream(ctx context.Context) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	writer := &agent.Agent{Name: "writer", Instructions: "Write vividly.", Model: env.Model, DB: env.DB}
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{Logger: quiet}, writer)
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

	prompt := "Write a short essay about Paris."
	if env.Fake != nil {
		prompt += " [fake:words=120,drip=15ms]" // a slower, shorter answer from the fake model
	}
	out, err := writer.Run(ctx, prompt, agent.Background(true))
	if err != nil {
		return err
	}
	fmt.Printf("run %s submitted (%s)\n\n", out.RunID, out.Status)

	// First reader: stops after a few deltas, as if its connection dropped.
	var streamed strings.Builder
	var lastSeq int64
	deltas := 0
	for ev, err := range writer.Events(ctx, out.RunID, 0) {
		if err != nil {
			return err
		}
		lastSeq = ev.Seq
		show(ev, &streamed)
		if ev.Type == run.EventContentDelta {
			if deltas++; deltas == 3 {
				break
			}
		}
	}
	fmt.Printf("\n\n--- reader dropped after seq %d; reconnecting with afterSeq=%d ---\n\n", lastSeq, lastSeq)
	time.Sleep(500 * time.Millisecond) // the run goes on meanwhile

	// Second reader: resumes exactly after the last seq it saw.
	for ev, err := range writer.Events(ctx, out.RunID, lastSeq) {
		if err != nil {
			return err
		}
		show(ev, &streamed)
	}

	final, err := writer.GetRunOutput(ctx, out.RunID)
	if err != nil {
		return err
	}
	fmt.Printf("\n\nfinal status %s; the streamed text equals the stored content: %v\n",
		final.Status, streamed.String() == final.Content)
	if streamed.String() != final.Content {
		return fmt.Errorf("%w: streamed %d bytes, stored %d", demo.ErrScenario, streamed.Len(), len(final.Content))
	}
	return nil
}

// show prints one event: deltas inline, everything else on its own line.
func show(ev run.Event, streamed *strings.Builder) {
	if ev.Type != run.EventContentDelta {
		fmt.Printf("\n[%d %s %s]\n", ev.Seq, ev.Type, ev.Data)
		return
	}
	var d struct {
		Delta string `json:"delta"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	streamed.WriteString(d.Delta)
	fmt.Print(d.Delta)
}
