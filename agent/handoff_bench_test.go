package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
)

// BenchmarkHandoffHop: the gap between a run's first model request ending
// and its second one arriving, by the fake model's clock, when the first
// turn calls a tool of the same agent (tool) and when it hands the run to
// another agent served by another worker (handoff): what a handoff adds
// over a tool call. Side by side in one run.
//
//	go test -run '^$' -bench HandoffHop -benchtime 200x ./agent
func BenchmarkHandoffHop(b *testing.B) {
	for _, kind := range []string{"tool", "handoff"} {
		b.Run(kind, func(b *testing.B) {
			d := kerntest.DB(b)
			srv, url := kerntest.ModelServer(b)
			client := agent.NewOpenAIClient("test-key", url)
			second := &agent.Agent{Name: "second", DB: d, Model: agent.OpenAIChat{Client: client, ID: "second"}}
			first := &agent.Agent{Name: "first", DB: d, Model: agent.OpenAIChat{Client: client, ID: "first"}}
			call := "noop"
			if kind == "handoff" {
				first.Handoffs, call = []*agent.Agent{second}, "transfer_to_second"
			} else {
				first.Tools = []agent.Tool{{Name: "noop", Call: func(context.Context, json.RawMessage) (string, error) { return "ok", nil }}}
			}
			srv.Script(func(req fakellm.Request) fakellm.Reply {
				if req.Model == "first" && len(req.Messages) <= 2 {
					return fakellm.Reply{ToolCalls: []fakellm.ToolCall{{ID: "c1", Name: call, Arguments: "{}"}}}
				}
				return fakellm.Reply{Content: "done"}
			})
			kerntest.Worker(b, d, agent.WorkerConfig{}, first)
			kerntest.Worker(b, d, agent.WorkerConfig{}, second)
			ctx := kerntest.Context(b, 10*time.Minute)
			var gaps []time.Duration
			for i := 0; i < b.N; i++ {
				out, err := first.Run(ctx, fmt.Sprintf("go %d", i), agent.Background(true))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := first.WaitRun(ctx, out.RunID); err != nil {
					b.Fatal(err)
				}
				reqs := srv.Requests()
				one, two := reqs[len(reqs)-2], reqs[len(reqs)-1]
				gaps = append(gaps, two.ReceivedAt.Sub(one.DoneAt))
			}
			slices.Sort(gaps)
			pct := func(p float64) time.Duration { return gaps[int(p*float64(len(gaps)-1))] }
			b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "hop-p50-ms")
			b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "hop-p99-ms")
		})
	}
}
