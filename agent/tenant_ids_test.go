package agent_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Two tenants run the same run id, in the background and in the
// foreground: each gets a run of its own, executed by the worker with its
// own prompt and tool calls, and ToolCallID names the run by its id.
func TestTwoTenantsRunTheSameRunID(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	var mu sync.Mutex
	toolCallIDs := map[string]string{} // the tool's argument -> ToolCallID
	lookup := agent.Tool{Name: "lookup", Call: func(ctx context.Context, args json.RawMessage) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		toolCallIDs[string(args)] = agent.ToolCallID(ctx)
		return "found", nil
	}}
	a := &agent.Agent{Name: "desk", Model: model, DB: d, Tools: []agent.Tool{lookup}}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		if last := req.Messages[len(req.Messages)-1]; last.Role == "tool" {
			return fakellm.Reply{Content: "done: " + req.LastUserMessage()}
		}
		args, _ := json.Marshal(map[string]string{"q": req.LastUserMessage()})
		return fakellm.Reply{ToolCalls: []fakellm.ToolCall{{Name: "lookup", Arguments: string(args)}}}
	})
	ctx := kerntest.Context(t, 60*time.Second)

	for _, tenant := range []string{"acme", "globex"} {
		out, err := a.Run(ctx, "bg of "+tenant, agent.Background(true), agent.WithTenant(tenant), agent.WithRunID("order-7"))
		if err != nil || out.RunID != "order-7" || out.TenantID != tenant {
			t.Fatalf("%s submits order-7: %+v, %v; want a run of its own", tenant, out, err)
		}
	}
	for _, tenant := range []string{"acme", "globex"} {
		v, err := d.ForTenant(tenant)
		if err != nil {
			t.Fatal(err)
		}
		out, err := v.WaitRun(ctx, "order-7")
		if err != nil || out.Status != run.StatusCompleted || out.Content != "done: bg of "+tenant {
			t.Fatalf("%s's order-7: %+v, %v; want completed with its own answer", tenant, out, err)
		}
	}
	// Foreground, through the tenants' own views.
	for _, tenant := range []string{"acme", "globex"} {
		out, err := a.Run(ctx, "fg of "+tenant, agent.WithTenant(tenant), agent.WithRunID("order-8"))
		if err != nil || out.Status != run.StatusCompleted || out.Content != "done: fg of "+tenant || out.RunID != "order-8" {
			t.Fatalf("%s's foreground order-8: %+v, %v", tenant, out, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for args, id := range toolCallIDs {
		runID, _, _ := strings.Cut(id, "/")
		want := "order-7"
		if strings.Contains(args, "fg of") {
			want = "order-8"
		}
		if runID != want {
			t.Errorf("ToolCallID of the call %s: %q; want it to begin with the run id %s/", args, id, want)
		}
	}
	if len(toolCallIDs) != 4 {
		t.Fatalf("tool calls: %v; want one per run", toolCallIDs)
	}
}
