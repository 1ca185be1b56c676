package db_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// submitChild submits a foreground run id of agent "a" below parent
// ("" for a top-level run), as tenant ("" for the operator).
func submitChild(ctx context.Context, d *db.DB, tenant, id, parent string) (*run.Output, error) {
	return d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x", TenantID: tenant, ParentRunID: parent})
}

// depthOf reads the stored depth of the run of key.
func depthOf(t *testing.T, d *db.DB, key string) int {
	t.Helper()
	var depth int
	if err := d.Pool().QueryRow(context.Background(), `SELECT depth FROM kern_run WHERE id = $1`, key).Scan(&depth); err != nil {
		t.Fatalf("depth of %q: %v", key, err)
	}
	return depth
}

// TestSubmitChildSetsParentAndDepth: a chain of MaxRunDepth children is
// accepted, each naming its parent and one deeper; one more is refused and
// not written.
func TestSubmitChildSetsParentAndDepth(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	parent := ""
	for depth := 0; depth <= db.MaxRunDepth; depth++ {
		id := fmt.Sprintf("level-%d", depth)
		out, err := submitChild(ctx, d, "", id, parent)
		if err != nil {
			t.Fatalf("submit at depth %d: %v", depth, err)
		}
		if out.ParentRunID != parent {
			t.Fatalf("submit at depth %d: ParentRunID = %q, want %q", depth, out.ParentRunID, parent)
		}
		if got := depthOf(t, d, id); got != depth {
			t.Fatalf("%s: depth %d, want %d", id, got, depth)
		}
		parent = id
	}
	_, err := submitChild(ctx, d, "", "too-deep", parent)
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("submit at depth %d: %v, want ErrInvalidArgument", db.MaxRunDepth+1, err)
	}
	if _, err := d.GetRun(ctx, "too-deep"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("the refused run: %v, want ErrNotFound (nothing written)", err)
	}
}

// TestSubmitChildUnknownParent: a parent that does not exist is
// run.ErrNotFound and nothing is written, in the batched, the background
// and the in-transaction submit alike.
func TestSubmitChildUnknownParent(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, p := range []db.SubmitParams{
		{RunID: "orphan-1", AgentName: "a", Input: "x", ParentRunID: "nobody"},
		{RunID: "orphan-2", AgentName: "a", Input: "x", ParentRunID: "nobody", Enqueue: true},
		{RunID: "orphan-3", AgentName: "a", Input: "x", ParentRunID: "nobody", Enqueue: true, Tx: tx},
	} {
		if _, err := d.SubmitRun(ctx, p); !errors.Is(err, run.ErrNotFound) {
			t.Fatalf("submit %s: %v, want ErrNotFound", p.RunID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the caller's transaction after a refused submit: %v", err)
	}
	var n int
	if err := d.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM kern_run) + (SELECT count(*) FROM river_job)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d runs and jobs written, want none", n)
	}
	if _, err := submitChild(ctx, d, "", "bad-parent", "bad\x00id"); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("a malformed parent id: %v, want ErrInvalidArgument", err)
	}
}

// TestSubmitChildInTx: a transaction may submit a parent and its child;
// both commit with it.
func TestSubmitChildInTx(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, p := range []db.SubmitParams{
		{RunID: "tx-parent", AgentName: "a", Input: "x", Enqueue: true, Tx: tx},
		{RunID: "tx-child", AgentName: "a", Input: "x", Enqueue: true, Tx: tx, ParentRunID: "tx-parent"},
	} {
		if _, err := d.SubmitRun(ctx, p); err != nil {
			t.Fatalf("submit %s: %v", p.RunID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := d.GetRun(ctx, "tx-child")
	if err != nil || out.ParentRunID != "tx-parent" {
		t.Fatalf("GetRun(tx-child) = %+v, %v; want ParentRunID tx-parent", out, err)
	}
}

// TestSubmitChildBatched: children submitted concurrently (batched into
// shared statements) each keep their own parent and depth.
func TestSubmitChildBatched(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	for _, id := range []string{"p0", "p1"} {
		if _, err := submitChild(ctx, d, "", id, ""); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := db.SubmitParams{RunID: fmt.Sprintf("c%02d", i), AgentName: "a", Input: "x", Enqueue: i%2 == 0,
				ParentRunID: fmt.Sprintf("p%d", i%2)}
			if _, err := d.SubmitRun(ctx, p); err != nil {
				errs <- fmt.Errorf("submit %s: %w", p.RunID, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("c%02d", i)
		out, err := d.GetRun(ctx, id)
		if err != nil || out.ParentRunID != fmt.Sprintf("p%d", i%2) || depthOf(t, d, id) != 1 {
			t.Fatalf("GetRun(%s) = %+v, %v; want parent p%d at depth 1", id, out, err, i%2)
		}
	}
}

// TestSubmitChildAgainKeepsParent: a second submit of a child's id, with
// another parent, is the usual conflict (or the idempotency key's run),
// and the stored parent stays the first.
func TestSubmitChildAgainKeepsParent(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	for _, id := range []string{"first", "second"} {
		if _, err := submitChild(ctx, d, "", id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := submitChild(ctx, d, "", "kid", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := submitChild(ctx, d, "", "kid", "second"); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("submit kid again: %v, want ErrAlreadyExists", err)
	}
	p := db.SubmitParams{RunID: "keyed", AgentName: "a", Input: "x", IdempotencyKey: "k", ParentRunID: "first"}
	if _, err := d.SubmitRun(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.ParentRunID = "second"
	again, created, err := d.SubmitRunOrExisting(ctx, p)
	if err != nil || created || again.ParentRunID != "first" {
		t.Fatalf("submit keyed again = %+v, created %v, %v; want the first run, parent first", again, created, err)
	}
	for _, id := range []string{"kid", "keyed"} {
		if out, err := d.GetRun(ctx, id); err != nil || out.ParentRunID != "first" {
			t.Fatalf("GetRun(%s) = %+v, %v; want ParentRunID first", id, out, err)
		}
	}
}

// TestRunTreeTenants: a tenant's child names its parent by id (never its
// key) to the tenant and to the operator; another tenant cannot name it as
// a parent, nor list its children.
func TestRunTreeTenants(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	if _, err := a.SubmitRun(ctx, db.SubmitParams{RunID: "root", AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SubmitRun(ctx, db.SubmitParams{RunID: "kid", AgentName: "a", Input: "x", ParentRunID: "root"}); err != nil {
		t.Fatal(err)
	}
	for name, get := range map[string]func() (*run.Output, error){
		"tenant":   func() (*run.Output, error) { return a.GetRun(ctx, "kid") },
		"operator": func() (*run.Output, error) { return d.GetRun(ctx, "kid") },
	} {
		if out, err := get(); err != nil || out.ParentRunID != "root" {
			t.Fatalf("%s's GetRun(kid) = %+v, %v; want ParentRunID root", name, out, err)
		}
	}
	if _, err := b.SubmitRun(ctx, db.SubmitParams{RunID: "b-kid", AgentName: "a", Input: "x", ParentRunID: "root"}); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("tenant b names a's run as parent: %v, want ErrNotFound", err)
	}
	if _, err := submitChild(ctx, d, "", "op-kid", "root"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("an operator's run below a tenant's: %v, want ErrNotFound", err)
	}
	if _, err := submitChild(ctx, d, "a", "op-kid", "root"); err != nil {
		t.Fatalf("the operator submits a's child: %v", err)
	}
	if got := listChildren(t, b, "root"); len(got) != 0 {
		t.Fatalf("tenant b lists a's children: %v", got)
	}
	if got, want := listChildren(t, a, "root"), []string{"kid", "op-kid"}; !slices.Equal(got, want) {
		t.Fatalf("tenant a lists root's children %v, want %v", got, want)
	}
	if got := depthOf(t, d, engine.RunKey("a", "kid")); got != 1 {
		t.Fatalf("a's kid at depth %d, want 1", got)
	}
}

// lister is DB or TenantDB.
type lister interface {
	ListRuns(context.Context, run.ListParams) (*run.ListResult, error)
}

// listChildren is the sorted ids of parent's children.
func listChildren(t *testing.T, l lister, parent string) []string {
	t.Helper()
	res, err := l.ListRuns(context.Background(), run.ListParams{ParentRunID: parent})
	if err != nil {
		t.Fatalf("list children of %s: %v", parent, err)
	}
	ids := runIDs(res.Runs)
	slices.Sort(ids)
	return ids
}

// TestListRunsOfParent: exactly a run's children, not its grandchildren,
// its siblings or itself; paged like any list; the agent filter applies.
func TestListRunsOfParent(t *testing.T) {
	t.Parallel()
	ctx, d := context.Background(), kerntest.DB(t)
	for _, r := range [][2]string{{"root", ""}, {"other", ""}, {"c1", "root"}, {"c2", "root"}, {"c3", "root"}, {"g1", "c1"}, {"o1", "other"}} {
		if _, err := submitChild(ctx, d, "", r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := listChildren(t, d, "root"), []string{"c1", "c2", "c3"}; !slices.Equal(got, want) {
		t.Fatalf("children of root %v, want %v", got, want)
	}
	if got, want := listChildren(t, d, "c1"), []string{"g1"}; !slices.Equal(got, want) {
		t.Fatalf("children of c1 %v, want %v", got, want)
	}
	if got := listChildren(t, d, "nobody"); len(got) != 0 {
		t.Fatalf("children of an unknown run %v, want none", got)
	}
	var paged []string
	p := run.ListParams{ParentRunID: "root", Limit: 2}
	for {
		res, err := d.ListRuns(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, runIDs(res.Runs)...)
		if p.Cursor = res.NextCursor; p.Cursor == "" {
			break
		}
	}
	if want := []string{"c3", "c2", "c1"}; !slices.Equal(paged, want) {
		t.Fatalf("paged children %v, want %v (newest first)", paged, want)
	}
	res, err := d.ListRuns(ctx, run.ListParams{ParentRunID: "root", AgentName: "b"})
	if err != nil || len(res.Runs) != 0 {
		t.Fatalf("children of root of agent b: %v, %v; want none", res, err)
	}
	if _, err := d.ListRuns(ctx, run.ListParams{ParentRunID: "bad\x00"}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("a malformed parent id: %v, want ErrInvalidArgument", err)
	}
}
