// Tools: an agent that acts. It has two real tools — a calculator and a
// file reader confined to one directory — and kern runs the loop: model
// turn, tool calls (the two of one turn at once), results back to the
// model, until it answers. Every finished turn and every tool result is
// committed as it happens, so a crash or a retry resumes from the
// transcript: a tool that returned is not called again.
//
// It runs offline by default: the fake model follows the "fake-plan:" line
// in the prompt (two turns of tool calls, then an answer). Set
// OPENAI_API_KEY (and optionally OPENAI_BASE_URL, KERN_MODEL) for a real
// model, which decides by itself, and DATABASE_URL for your own Postgres.
//
//	go run ./cookbook/tools
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
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

	dir, err := os.MkdirTemp("", "kern-tools-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("Order 1138: 42 boxes, 3 pallets.\n"), 0o600); err != nil {
		return err
	}
	files, err := newFileReader(dir)
	if err != nil {
		return err
	}
	defer files.Close()

	assistant := &agent.Agent{
		Name:         "clerk",
		Instructions: "You answer questions about orders. Use the tools; never guess numbers.",
		Model:        env.Model,
		DB:           env.DB,
		Tools:        []agent.Tool{calculatorTool(), files.tool()},
		MaxSteps:     5,
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

	prompt := "How many boxes are in order 1138 in all, if every pallet holds as many as notes.txt says?"
	if env.Fake != nil {
		// The fake model's script: read the file and check the arithmetic
		// in one turn (two calls at once), multiply in the next, answer.
		prompt += "\n" + `fake-plan: {"turns": [` +
			`[{"name": "read_file", "arguments": {"path": "notes.txt"}}, {"name": "calculate", "arguments": {"expression": "42 / 3"}}],` +
			`[{"name": "calculate", "arguments": {"expression": "42 * 3"}}]],` +
			` "answer": "Order 1138 has 42 boxes on each of its 3 pallets: {{last}} boxes in all."}`
	}
	out, err := assistant.Run(ctx, prompt, agent.Background(true))
	if err != nil {
		return err
	}
	fmt.Printf("submitted %s (%s)\n", out.RunID, out.Status)
	if out, err = assistant.WaitRun(ctx, out.RunID); err != nil {
		return err
	}
	fmt.Printf("%s: %s\n", out.Status, out.Content)
	fmt.Printf("model turns %d, tool calls %d, tokens %d\n\ntranscript:\n", out.Metrics.ModelTurns, out.Metrics.ToolCalls, out.Metrics.TotalTokens)

	msgs, err := env.DB.Messages(ctx, out.RunID)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		switch {
		case len(m.ToolCalls) > 0:
			for _, c := range m.ToolCalls {
				fmt.Printf("  %d %-9s calls %s(%s)\n", m.Seq, m.Role, c.Name, c.Arguments)
			}
		case m.Role == "tool":
			fmt.Printf("  %d %-9s %s → %s\n", m.Seq, m.Role, m.ToolCallID, strings.TrimSpace(m.Content))
		default:
			fmt.Printf("  %d %-9s %s\n", m.Seq, m.Role, firstLine(m.Content))
		}
	}
	return nil
}

// calculatorTool evaluates arithmetic exactly (see calc.go).
func calculatorTool() agent.Tool {
	return agent.Tool{
		Name:        "calculate",
		Description: "Evaluate an arithmetic expression: numbers, + - * /, parentheses.",
		Parameters: map[string]any{
			"type":       "object",
			"properties": map[string]any{"expression": map[string]any{"type": "string"}},
			"required":   []string{"expression"},
		},
		Call: func(ctx context.Context, args json.RawMessage) (string, error) {
			var in struct{ Expression string }
			if err := json.Unmarshal(args, &in); err != nil {
				return "", err
			}
			return calculate(in.Expression)
		},
	}
}

func firstLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}
