package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestCancelRunReachesRunningTree: a root, its child and its grandchild,
// background runs whose model calls hang, all end cancelled when the root
// is, and the grandchild's model stream is closed; the root's child that
// had finished stays completed.
func TestCancelRunReachesRunningTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(req.LastUserMessage(), "hang") {
			return fakellm.Reply{Hang: true}
		}
		return fakellm.Reply{Content: "done"}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	submit := func(id, parent, prompt string) {
		t.Helper()
		if _, err := e.db.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: e.agent.Name, Input: prompt, Enqueue: true, ParentRunID: parent}); err != nil {
			t.Fatalf("submit %s: %v", id, err)
		}
	}
	submit("root", "", "hang root")
	submit("sibling", "root", "answer")
	if out := mustWait(t, e.agent, "sibling"); out.Status != run.StatusCompleted {
		t.Fatalf("sibling: %s, want completed", out.Status)
	}
	submit("child", "root", "hang child")
	submit("grandchild", "child", "hang grandchild")
	// Every run's one model call has arrived: the three hanging ones are
	// in flight.
	if err := e.model.WaitRequests(ctx, 4); err != nil {
		t.Fatal(err)
	}
	grandchildCall := 0
	for _, r := range e.model.Requests() {
		if r.LastUserMessage() == "hang grandchild" {
			grandchildCall = r.Seq
		}
	}
	if grandchildCall == 0 {
		t.Fatal("the grandchild's model call is not in the log")
	}

	if ok, err := e.agent.CancelRun(ctx, "root"); err != nil || !ok {
		t.Fatalf("CancelRun(root) = %v, %v; want true", ok, err)
	}
	for _, id := range []string{"root", "child", "grandchild"} {
		if out := mustWait(t, e.agent, id); out.Status != run.StatusCancelled {
			t.Fatalf("%s after cancelling root: %s, want cancelled", id, out.Status)
		}
	}
	if _, err := e.model.WaitClientGone(ctx, grandchildCall); err != nil {
		t.Fatalf("the grandchild's model stream was not closed: %v", err)
	}
	out, err := e.db.GetRun(ctx, "sibling")
	if err != nil || out.Status != run.StatusCompleted || out.ParentRunID != "root" {
		t.Fatalf("sibling after cancelling root: %+v, %v; want completed, below root", out, err)
	}
}
