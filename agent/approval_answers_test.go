package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Approving a call of an External tool is refused and changes nothing: an
// External call's answer is its result. (It used to put the run back to
// pending, the worker waited on the call again, and every later answer
// failed on the answers' primary key until the wait timed out.)
func TestApprovalExternalApproveRefused(t *testing.T) {
	t.Parallel()
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{Name: "ask_human", Description: "Ask a person.", External: true})
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "q", Name: "ask_human", Arguments: `{"question":"colour?"}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "ask")
	before, err := e.db.StoredEvents(ctx, w.RunID, 0)
	if err != nil {
		t.Fatal(err)
	}

	err = e.agent.ApproveToolCall(ctx, w.RunID, "q")
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("approve of an External call: %v, want ErrInvalidArgument", err)
	}
	out, err := e.agent.GetRunOutput(ctx, w.RunID)
	if err != nil || out.Status != run.StatusWaiting || len(out.Waiting) != 1 || out.Waiting[0].ID != "q" {
		t.Fatalf("after the refused approval: %+v, %v; want still waiting on q", out, err)
	}
	if after, err := e.db.StoredEvents(ctx, w.RunID, 0); err != nil || len(after) != len(before) {
		t.Fatalf("the refused approval wrote events: %d before, %d after (%v)", len(before), len(after), err)
	}
	if err := e.agent.SubmitToolResult(ctx, w.RunID, "q", "blue"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted || final.Content != "finished" {
		t.Fatalf("run %+v", final)
	}
	if tm := lastToolMessages(e); len(tm) != 1 || tm[0].Content != "blue" {
		t.Fatalf("the model read %+v", tm)
	}
	checkToolLog(t, e, final, 1)
}

// A call approved while its tool NeedsApproval, resumed by a worker on
// which the tool is External (a deploy changed it), waits again on the same
// call id. The approval does not block the answers that follow: a second
// approval is refused (ErrInvalidArgument), the result stands and the run
// completes.
func TestApprovalRewaitAfterApproval(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	srv.Script(askThenAnswer(fakellm.ToolCall{ID: "q", Name: "ask", Arguments: `{}`}))
	ctx := kerntest.Context(t, 60*time.Second)
	before := &agent.Agent{Name: "redeployed", Model: model, DB: d, Tools: []agent.Tool{{Name: "ask", NeedsApproval: true,
		Call: func(context.Context, json.RawMessage) (string, error) { return "made by the worker", nil }}}}
	after := &agent.Agent{Name: "redeployed", Model: model, DB: d, Tools: []agent.Tool{{Name: "ask", External: true}}}
	start := func(a *agent.Agent) *agent.Worker {
		w, err := agent.NewWorker(d, agent.WorkerConfig{Logger: slog.New(slog.DiscardHandler)}, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1 := start(before)
	out, err := before.Run(ctx, "ask", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustWait(t, before, out.RunID); got.Status != run.StatusWaiting {
		t.Fatalf("run %+v, want waiting", got)
	}
	if err := w1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := before.ApproveToolCall(ctx, out.RunID, "q"); err != nil {
		t.Fatal(err)
	}
	w2 := start(after)
	defer func() { _ = w2.Stop(context.Background()) }()
	var again *run.Output
	waitFor(t, 20*time.Second, "the run to wait again", func() bool {
		again, err = after.GetRunOutput(ctx, out.RunID)
		return err == nil && again.Status == run.StatusWaiting && startedCount(t, d, out.RunID) == 2
	})
	if len(again.Waiting) != 1 || again.Waiting[0].ID != "q" {
		t.Fatalf("waits again on %+v, want q", again.Waiting)
	}
	if err := after.ApproveToolCall(ctx, out.RunID, "q"); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("second approval: %v, want ErrInvalidArgument", err)
	}
	if err := after.SubmitToolResult(ctx, out.RunID, "q", "from outside"); err != nil {
		t.Fatalf("result after the re-wait: %v", err)
	}
	if err := after.RejectToolCall(ctx, out.RunID, "q", "late"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("rejection after the result: %v, want ErrNotWaiting", err)
	}
	final := mustWait(t, after, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "finished" {
		t.Fatalf("run %+v", final)
	}
	msgs, err := d.Messages(ctx, out.RunID)
	if err != nil || len(msgs) != 4 || msgs[2].Content != "from outside" || msgs[2].ToolCallID != "q" {
		t.Fatalf("transcript %+v, %v", msgs, err)
	}
}

// startedCount counts the run.started events of a run: its executions.
func startedCount(t *testing.T, d *db.DB, runID string) int {
	t.Helper()
	evs, err := d.StoredEvents(kerntest.Context(t, 10*time.Second), runID, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Type == run.EventRunStarted {
			n++
		}
	}
	return n
}
