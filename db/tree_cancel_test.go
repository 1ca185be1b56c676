package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// hasCancelRequest tells whether the run of key has a cancel request.
func hasCancelRequest(t *testing.T, d *db.DB, key string) bool {
	t.Helper()
	var ok bool
	if err := d.Pool().QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM kern_run_cancel WHERE run_id = $1)`, key).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// cancelledEvents counts the run.cancelled events of the run of key.
func cancelledEvents(t *testing.T, d *db.DB, key string) int {
	t.Helper()
	var n int
	if err := d.Pool().QueryRow(context.Background(), `SELECT count(*) FROM kern_run_event WHERE run_id = $1 AND type = 'run.cancelled'`, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCancelRunReachesTree: cancelling a tenant's run cancels every live
// run below it, at any depth and through a finished one, each once with
// its request, its event and its worker told; a finished child and
// another tenant's runs of the same ids are left alone.
func TestCancelRunReachesTree(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	tree := [][2]string{{"root", ""}, {"child", "root"}, {"grandchild", "child"}, {"done", "root"}, {"below-done", "done"}}
	for _, tdb := range []*db.TenantDB{a, b} {
		for _, r := range tree {
			if _, err := tdb.SubmitRun(ctx, db.SubmitParams{RunID: r[0], AgentName: "a", Input: "x", ParentRunID: r[1]}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range []string{"root", "grandchild", "done"} {
		if _, err := ex(d).StartRun(ctx, akey(id), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ex(d).FinishRun(ctx, akey("done"), 1, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	told := ex(d).SubscribeCancel(akey("grandchild"))
	defer told.Close()

	ok, err := a.CancelRun(ctx, "root")
	if err != nil || !ok {
		t.Fatalf("CancelRun(root) = %v, %v; want true", ok, err)
	}
	for _, id := range []string{"root", "child", "grandchild", "below-done"} {
		out, err := a.GetRun(ctx, id)
		if err != nil || out.Status != run.StatusCancelled {
			t.Fatalf("a's %s after cancelling root: %+v, %v; want cancelled", id, out, err)
		}
		if !hasCancelRequest(t, d, akey(id)) || cancelledEvents(t, d, akey(id)) != 1 {
			t.Fatalf("a's %s: want one cancel request and one run.cancelled event", id)
		}
	}
	if out, err := a.GetRun(ctx, "done"); err != nil || out.Status != run.StatusCompleted || hasCancelRequest(t, d, akey("done")) {
		t.Fatalf("a's finished child: %+v, %v; want completed, without a cancel request", out, err)
	}
	for _, r := range tree {
		if out, err := b.GetRun(ctx, r[0]); err != nil || out.Status != run.StatusPending {
			t.Fatalf("b's %s: %+v, %v; want pending, untouched", r[0], out, err)
		}
	}
	select {
	case <-told.C():
	case <-time.After(10 * time.Second):
		t.Fatal("the grandchild's worker was not told of its cancel")
	}

	// Again: idempotent, nothing cancelled twice.
	if ok, err := a.CancelRun(ctx, "root"); err != nil || !ok {
		t.Fatalf("CancelRun(root) again = %v, %v; want true", ok, err)
	}
	if n := cancelledEvents(t, d, akey("grandchild")); n != 1 {
		t.Fatalf("the grandchild has %d run.cancelled events after a second cancel, want 1", n)
	}
}

// TestCancelFinishedRunReachesTree: cancelling a run that had finished
// answers false and leaves it as it was, and still cancels the live runs
// below it.
func TestCancelFinishedRunReachesTree(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	for _, r := range [][2]string{{"root", ""}, {"child", "root"}} {
		if _, err := submitChild(ctx, d, "", r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ex(d).StartRun(ctx, "root", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "root", 1, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	res, err := d.CancelRunResult(ctx, "root")
	if err != nil || res.Outcome != db.CancelAlreadyFinished || res.Status != run.StatusCompleted {
		t.Fatalf("CancelRunResult(root) = %+v, %v; want already finished, completed", res, err)
	}
	if hasCancelRequest(t, d, "root") {
		t.Fatal("the finished root kept a cancel request")
	}
	if got := status(t, d, "child"); got != run.StatusCancelled {
		t.Fatalf("the live child of a finished run: %s, want cancelled", got)
	}
}
