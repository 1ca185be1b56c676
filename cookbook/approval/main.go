// Approval: a person in the loop. The agent has a transfer_money tool that
// needs approval. Its run asks for a transfer, stores the turn and moves to
// waiting: its River job ends and no worker holds it while it waits — it is
// a row, and survives any restart. Another process (here a second db.DB on
// the same database, as an approval service would open) lists the runs that
// wait, approves the call, and a worker runs the tool and finishes the run.
// A second approval of the same call is refused with run.ErrNotWaiting.
//
// It runs offline by default: the fake model follows the "fake-plan:" line
// in the prompt. Set OPENAI_API_KEY (and optionally OPENAI_BASE_URL,
// KERN_MODEL) for a real model, and DATABASE_URL for your own Postgres.
//
//	go run ./cookbook/approval
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/run"
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

	transfers := 0
	teller := &agent.Agent{
		Name:         "teller",
		Instructions: "You move money between accounts when asked. Always use the tool.",
		Model:        env.Model,
		DB:           env.DB,
		Tools: []agent.Tool{{
			Name:        "transfer_money",
			Description: "Transfer an amount in euros from one account to another.",
			Parameters: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"from": map[string]any{"type": "string"}, "to": map[string]any{"type": "string"},
					"amount_eur": map[string]any{"type": "number"},
				},
				"required": []string{"from", "to", "amount_eur"},
			},
			NeedsApproval: true, // the run waits until a person approves or rejects the call
			Call: func(ctx context.Context, args json.RawMessage) (string, error) {
				// A real tool would key the payment on agent.ToolCallID(ctx),
				// so a retry after a crash cannot pay twice.
				transfers++
				return fmt.Sprintf("transfer %s done: %s", agent.ToolCallID(ctx), args), nil
			},
		}},
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{Logger: logger, MaxConcurrentRuns: 1}, teller)
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

	prompt := "Pay 120 EUR from account A-1 to account B-7 for the invoice."
	if env.Fake != nil {
		prompt += "\n" + `fake-plan: {"turns": [[{"name": "transfer_money", "arguments": {"from": "A-1", "to": "B-7", "amount_eur": 120}}]],` +
			` "answer": "Done: {{last}}"}`
	}
	out, err := teller.Run(ctx, prompt, agent.Background(true), agent.WithWaitTimeout(time.Hour))
	if err != nil {
		return err
	}
	// WaitRun returns when the run needs an answer to go on.
	if out, err = teller.WaitRun(ctx, out.RunID); err != nil {
		return err
	}
	fmt.Printf("run %s is %s; it waits on:\n", out.RunID, out.Status)
	for _, c := range out.Waiting {
		fmt.Printf("  %s %s(%s)\n", c.ID, c.Name, c.Arguments)
	}

	// The approver: another connection to the same database, as another
	// process would have. It needs no agent, only the DB.
	approver, err := db.Open(ctx, env.DB.Pool().Config().ConnString())
	if err != nil {
		return err
	}
	defer approver.Close()
	waiting, err := approver.ListRuns(ctx, run.ListParams{Statuses: []run.Status{run.StatusWaiting}})
	if err != nil {
		return err
	}
	fmt.Printf("\nthe approver finds %d run(s) waiting\n", len(waiting.Runs))
	for _, r := range waiting.Runs {
		for _, c := range r.Waiting {
			if err := approver.ApproveToolCall(ctx, r.RunID, c.ID); err != nil {
				return err
			}
			fmt.Printf("approved %s of run %s\n", c.ID, r.RunID)
			// A double click: the first answer stands.
			if err := approver.ApproveToolCall(ctx, r.RunID, c.ID); errors.Is(err, run.ErrNotWaiting) {
				fmt.Println("a second approval of the same call is refused:", err)
			} else {
				return fmt.Errorf("second approval: %v, want run.ErrNotWaiting", err)
			}
		}
	}

	if out, err = teller.WaitRun(ctx, out.RunID); err != nil {
		return err
	}
	fmt.Printf("\n%s: %s\n(the tool ran %d time(s))\n", out.Status, out.Content, transfers)
	return nil
}
