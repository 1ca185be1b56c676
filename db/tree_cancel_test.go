package db_test

import (
	"context"
	"fmt"
	"sync"
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

// TestChildBelowCancelledRunEndsCancelled: a child submitted after a run
// above it was cancelled ends cancelled (batched submit), or carries its
// request to its start (a submit in the caller's transaction); a child of
// a run whose cancel came too late does not.
func TestChildBelowCancelledRunEndsCancelled(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	for _, r := range [][2]string{{"root", ""}, {"mid", "root"}, {"finished", ""}} {
		if _, err := submitChild(ctx, d, "", r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ex(d).StartRun(ctx, "finished", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "finished", 1, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"root", "finished"} {
		if _, err := d.CancelRun(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	// Below the cancelled root, through its cancelled child.
	if _, err := submitChild(ctx, d, "", "late", "mid"); err != nil {
		t.Fatal(err)
	}
	if got := status(t, d, "late"); got != run.StatusCancelled {
		t.Fatalf("a child submitted below a cancelled run: %s, want cancelled", got)
	}
	if _, err := submitChild(ctx, d, "", "of-finished", "finished"); err != nil {
		t.Fatal(err)
	}
	if got := status(t, d, "of-finished"); got != run.StatusPending {
		t.Fatalf("a child of a run finished before its cancel: %s, want pending", got)
	}

	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "late-tx", AgentName: "a", Input: "x", Enqueue: true, Tx: tx, ParentRunID: "root"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !hasCancelRequest(t, d, "late-tx") {
		t.Fatal("a child submitted in a transaction below a cancelled run has no cancel request")
	}
	if hasCancelRequest(t, d, "of-finished") {
		t.Fatal("the child of a run finished before its cancel has a cancel request")
	}
}

// TestCancelRacingChildSubmits: children submitted while their parent is
// cancelled all end cancelled, whichever of the two commits first.
func TestCancelRacingChildSubmits(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	const rounds, children = 20, 4
	for r := range rounds {
		root := fmt.Sprintf("root-%d", r)
		if _, err := submitChild(ctx, d, "", root, ""); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, children+1)
		start := make(chan struct{})
		for c := range children {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := submitChild(ctx, d, "", fmt.Sprintf("%s-kid-%d", root, c), root); err != nil {
					errs <- err
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := d.CancelRun(ctx, root); err != nil {
				errs <- err
			}
		}()
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for c := range children {
			if got := status(t, d, fmt.Sprintf("%s-kid-%d", root, c)); got != run.StatusCancelled {
				t.Fatalf("round %d: child %d submitted as its parent was cancelled: %s, want cancelled", r, c, got)
			}
		}
	}
}
