package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A model-given call id becomes a path segment of the answer routes and of
// the dashboard's forms: one that reads as a path ("../../victim-run/…")
// would aim an Approve button at another run's call. Such ids are replaced
// by call_<turn>_<index>, stored, and used everywhere after: the tool's
// ToolCallID, the transcript, the events, the model's next request.
func TestToolUnsafeCallIDsAreReplaced(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var keys []string
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{Name: "step", Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, agent.ToolCallID(ctx))
		return "ok", nil
	}})
	given := []string{
		"../../victim-run/tool-calls/call_9/approve?",
		"a#b", "50%", `back\slash`, "tab\there", "..", ".", strings.Repeat("x", run.MaxToolCallIDLength+1),
		"call ok:é", // safe: kept as given
	}
	want := make([]string, len(given))
	calls := make([]fakellm.ToolCall, len(given))
	for i, id := range given {
		calls[i] = fakellm.ToolCall{ID: id, Name: "step", Arguments: `{}`}
		want[i] = fmt.Sprintf("call_1_%d", i)
	}
	want[len(want)-1] = given[len(given)-1]
	var mmu sync.Mutex
	var answered []string // the tool_call_ids of the model's second request
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if toolMessages(req) == 0 {
			return fakellm.Reply{ToolCalls: calls}
		}
		mmu.Lock()
		defer mmu.Unlock()
		for _, m := range req.Messages {
			if m.Role == "tool" {
				answered = append(answered, m.ToolCallID)
			}
		}
		return fakellm.Reply{Content: "Done."}
	})
	final := runTool(t, e, "hostile ids")
	if final.Status != run.StatusCompleted {
		t.Fatalf("run %s: %s", final.Status, final.Error)
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,"+strings.Repeat("tool,", len(given))+"assistant" {
		t.Fatalf("transcript roles %s", roles(msgs))
	}
	var stored, results []string
	for _, c := range msgs[1].ToolCalls {
		stored = append(stored, c.ID)
	}
	for _, m := range msgs[2 : 2+len(given)] {
		results = append(results, m.ToolCallID)
	}
	if !slices.Equal(stored, want) || !slices.Equal(results, want) {
		t.Fatalf("stored call ids %q, tool results for %q; want %q", stored, results, want)
	}
	mmu.Lock()
	if !slices.Equal(answered, want) {
		t.Errorf("the model's next request answers %q, want %q", answered, want)
	}
	mmu.Unlock()
	mu.Lock()
	slices.Sort(keys)
	wantKeys := make([]string, len(want))
	for i, id := range want {
		wantKeys[i] = final.RunID + "/" + id
	}
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("ToolCallIDs %q, want %q", keys, wantKeys)
	}
	mu.Unlock()
	ctx := kerntest.Context(t, 10*time.Second)
	events, err := e.db.StoredEvents(ctx, final.RunID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var evIDs []string
	for _, ev := range events {
		if ev.Type == "tool.call" {
			var d struct{ ID string }
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			evIDs = append(evIDs, d.ID)
		}
	}
	if !slices.Equal(evIDs, want) {
		t.Errorf("tool.call events name %q, want %q", evIDs, want)
	}
}

// The answer methods refuse a call id that no stored call can have, as
// run.ErrInvalidArgument, before reading anything.
func TestAnswerRefusesUnsafeCallID(t *testing.T) {
	t.Parallel()
	e := toolEnv(t, agent.WorkerConfig{}, 0)
	ctx := kerntest.Context(t, 10*time.Second)
	for _, id := range []string{"../../victim-run/tool-calls/call_9/approve?", "a/b", "a?b", "a#b", "a%2Fb", `a\b`, "a\x00b", "a\nb", "..", ".", "",
		strings.Repeat("x", run.MaxToolCallIDLength+1)} {
		for name, answer := range map[string]func() error{
			"approve": func() error { return e.db.ApproveToolCall(ctx, "some-run", id) },
			"reject":  func() error { return e.db.RejectToolCall(ctx, "some-run", id, "no") },
			"result":  func() error { return e.db.SubmitToolResult(ctx, "some-run", id, "out") },
		} {
			if err := answer(); !errors.Is(err, run.ErrInvalidArgument) {
				t.Errorf("%s call %q: %v, want run.ErrInvalidArgument", name, id, err)
			}
		}
	}
}
