// Command kern operates kern from a shell: migrate the database, run a
// worker process, and submit, inspect, wait for and cancel runs.
//
//	kern migrate
//	kern worker --agent assistant --model gpt-5-mini --concurrency 10
//	kern worker --agent writer,editor   # one worker, several agents
//	kern worker --config agents.yaml    # agents and settings from a file
//	kern runs submit --agent assistant "What is the capital of France?"
//	kern runs wait --follow <run-id>   # exit 0 completed, 1 error, 2 cancelled, 3 --timeout, 4 waiting
//	kern runs list --status running --json
//	kern runs events --follow <run-id>
//	kern runs clear --older-than 24h
//	kern runs approve <run-id> <call-id>
//	kern schedules put morning --agent assistant --cron "0 7 * * *" "Summarise yesterday."
//
// The database comes from --database-url or DATABASE_URL; the model from
// OPENAI_BASE_URL (unset: OpenAI's API) and OPENAI_API_KEY (needed only for
// OpenAI's API; a local endpoint takes none).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		if msg := err.Error(); msg != "" { // an exitErr may have nothing to add
			if !strings.HasPrefix(msg, "kern:") { // kern's own errors say so already
				msg = "kern: " + msg
			}
			fmt.Fprintln(os.Stderr, msg)
		}
		os.Exit(exitCode(err)) // see runs wait's help
	}
}
