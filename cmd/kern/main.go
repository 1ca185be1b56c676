// Command kern operates kern from a shell: migrate the database, run a
// worker process, and submit, inspect, wait for and cancel runs.
//
//	kern migrate
//	kern worker --agent assistant --model gpt-5-mini --concurrency 10
//	kern runs submit --agent assistant "What is the capital of France?"
//	kern runs wait <run-id>
//
// The database comes from --database-url or DATABASE_URL; the model from
// OPENAI_API_KEY and OPENAI_BASE_URL.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kern:", err)
		os.Exit(1)
	}
}
