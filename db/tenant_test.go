package db_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// forTenant is d.ForTenant(tenant), which must not fail.
func forTenant(t *testing.T, d *db.DB, tenant string) *db.TenantDB {
	t.Helper()
	v, err := d.ForTenant(tenant)
	if err != nil {
		t.Fatalf("ForTenant(%q): %v", tenant, err)
	}
	if v.Tenant() != tenant {
		t.Fatalf("ForTenant(%q).Tenant() = %q", tenant, v.Tenant())
	}
	return v
}

// submitAs submits a foreground run of agent "a" as tenant ("" for the
// operator), through d.SubmitRun with SubmitParams.TenantID.
func submitAs(t *testing.T, d *db.DB, tenant, id string) *run.Output {
	t.Helper()
	out, err := d.SubmitRun(context.Background(), db.SubmitParams{RunID: id, AgentName: "a", Input: "hello", TenantID: tenant})
	if err != nil {
		t.Fatalf("submit %s as tenant %q: %v", id, tenant, err)
	}
	if out.TenantID != tenant {
		t.Fatalf("submit %s as tenant %q: Output.TenantID = %q", id, tenant, out.TenantID)
	}
	return out
}

// akey is the key of tenant a's run of id (engine.RunKey), which the
// executing side names it by.
func akey(id string) string { return engine.RunKey("a", id) }

func status(t *testing.T, d *db.DB, id string) run.Status {
	t.Helper()
	out, err := d.GetRun(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return out.Status
}

func runIDs(runs []*run.Output) []string {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.RunID
	}
	return ids
}

// firstEventErr is the first error Events yields, and how many events came
// before it.
func firstEventErr(seq func(func(run.Event, error) bool)) (int, error) {
	n := 0
	for _, err := range seq {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// notFoundEverywhere checks that every read and answer of v for id is
// run.ErrNotFound, at once.
func notFoundEverywhere(t *testing.T, v *db.TenantDB, id string) {
	t.Helper()
	ctx := kerntest.Context(t, 10*time.Second) // WaitRun and Events would block on a live run
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, run.ErrNotFound) {
			t.Errorf("tenant %s: %s(%s) err = %v; want run.ErrNotFound", v.Tenant(), what, id, err)
		}
	}
	out, err := v.GetRun(ctx, id)
	check("GetRun", err)
	if out != nil {
		t.Errorf("tenant %s: GetRun(%s) returned a run: %+v", v.Tenant(), id, out)
	}
	_, err = v.WaitRun(ctx, id)
	check("WaitRun", err)
	msgs, err := v.Messages(ctx, id)
	check("Messages", err)
	if len(msgs) != 0 {
		t.Errorf("tenant %s: Messages(%s) returned %v", v.Tenant(), id, msgs)
	}
	evs, err := v.StoredEvents(ctx, id, 0)
	check("StoredEvents", err)
	if len(evs) != 0 {
		t.Errorf("tenant %s: StoredEvents(%s) returned %v", v.Tenant(), id, evs)
	}
	n, err := firstEventErr(v.Events(ctx, id, 0))
	check("Events", err)
	if n != 0 {
		t.Errorf("tenant %s: Events(%s) yielded %d events before its error", v.Tenant(), id, n)
	}
	check("ApproveToolCall", v.ApproveToolCall(ctx, id, "c1"))
	check("RejectToolCall", v.RejectToolCall(ctx, id, "c1", "no"))
	check("SubmitToolResult", v.SubmitToolResult(ctx, id, "c1", "out"))
}

// waitOn puts the running run id (execution 1) to waiting on calls c1, c2,
// as a worker would.
func waitOn(t *testing.T, d *db.DB, id string) {
	t.Helper()
	ctx := context.Background()
	seq, err := ex(d).lastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	calls := []engine.WaitCall{
		{Seq: 3, Call: run.ToolCall{ID: "c1", Name: "deploy", Arguments: `{}`}},
		{Seq: 4, Call: run.ToolCall{ID: "c2", Name: "lookup", Arguments: `{}`}},
	}
	if err := d.Engine(engine.Key{}).WaitForAnswers(ctx, engine.Fence{RunID: id, Execution: 1}, seq+1, calls); err != nil {
		t.Fatalf("wait for answers: %v", err)
	}
}

// A tenant's run reads, for every other tenant, exactly as an id with no
// run; its own tenant and the operator see it.
func TestTenantRunVisibility(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")

	submitAs(t, d, "a", "ra")
	for _, get := range []func(context.Context, string) (*run.Output, error){a.GetRun, d.GetRun} {
		out, err := get(ctx, "ra")
		if err != nil || out.RunID != "ra" || out.TenantID != "a" || out.Status != run.StatusPending {
			t.Fatalf("get of a's run: %+v, %v; want it, TenantID a", out, err)
		}
	}
	// Another tenant: not found, as an unknown id is (for b and for a).
	notFoundEverywhere(t, b, "ra")
	notFoundEverywhere(t, b, "unknown")
	notFoundEverywhere(t, a, "unknown")
	// The operator's own runs are no tenant's either.
	submitAs(t, d, "", "rop")
	notFoundEverywhere(t, a, "rop")

	_, errA := b.GetRun(ctx, "ra")
	_, errU := b.GetRun(ctx, "unknown")
	if strings.ReplaceAll(errA.Error(), "ra", "ID") != strings.ReplaceAll(errU.Error(), "unknown", "ID") {
		t.Errorf("another tenant's run reads differently from an unknown id: %q vs %q", errA, errU)
	}

	// Lists: b has none; a has its own; the operator filters by tenant.
	for _, p := range []run.ListParams{{}, {AgentName: "a"}, {TenantID: "a"}, {Statuses: []run.Status{run.StatusPending}}} {
		res, err := b.ListRuns(ctx, p)
		if err != nil || len(res.Runs) != 0 {
			t.Errorf("b.ListRuns(%+v) = %v, %v; want none", p, res, err)
		}
	}
	if res, err := a.ListRuns(ctx, run.ListParams{}); err != nil || fmt.Sprint(runIDs(res.Runs)) != "[ra]" || res.Runs[0].TenantID != "a" {
		t.Fatalf("a.ListRuns: %v, %v; want [ra]", res, err)
	}
	if res, err := d.ListRuns(ctx, run.ListParams{TenantID: "a"}); err != nil || fmt.Sprint(runIDs(res.Runs)) != "[ra]" {
		t.Fatalf("d.ListRuns(TenantID a): %v, %v; want [ra]", res, err)
	}
	if res, err := d.ListRuns(ctx, run.ListParams{TenantID: "a", AgentName: "a"}); err != nil || fmt.Sprint(runIDs(res.Runs)) != "[ra]" {
		t.Fatalf("d.ListRuns(TenantID a, agent a): %v, %v; want [ra]", res, err)
	}
	if res, err := d.ListRuns(ctx, run.ListParams{TenantID: "b"}); err != nil || len(res.Runs) != 0 {
		t.Fatalf("d.ListRuns(TenantID b): %v, %v; want none", res, err)
	}
	if res, err := d.ListRuns(ctx, run.ListParams{}); err != nil || fmt.Sprint(runIDs(res.Runs)) != "[rop ra]" {
		t.Fatalf("d.ListRuns(): %v, %v; want every tenant's runs", res, err)
	}

	// Waiting on tool calls: b's answers are not found (not "not
	// waiting"), and change nothing; a's apply.
	if _, err := ex(d).StartRun(ctx, akey("ra"), nil); err != nil {
		t.Fatal(err)
	}
	waitOn(t, d, akey("ra"))
	notFoundEverywhere(t, b, "ra")
	if out, _ := d.GetRun(ctx, "ra"); out.Status != run.StatusWaiting || len(out.Waiting) != 2 {
		t.Fatalf("after b's answers: %+v; want waiting on two calls", out)
	}
	if err := a.ApproveToolCall(ctx, "ra", "c1"); err != nil {
		t.Fatalf("a approves: %v", err)
	}
	if err := a.ApproveToolCall(ctx, "ra", "c1"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("a approves again: %v; want run.ErrNotWaiting", err)
	}
	if err := a.SubmitToolResult(ctx, "ra", "c2", "42"); err != nil {
		t.Fatalf("a answers: %v", err)
	}
	if got := status(t, d, "ra"); got != run.StatusPending {
		t.Fatalf("after a's answers: %s; want pending", got)
	}
	// Once finished, still nothing for b; everything for a.
	var job int64
	if err := d.Pool().QueryRow(ctx, `SELECT job_id FROM kern_run WHERE id = $1`, akey("ra")).Scan(&job); err != nil {
		t.Fatal(err)
	}
	if _, err := ex(d).StartRun(ctx, akey("ra"), &job); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, akey("ra"), 2, engine.Finish{Status: run.StatusCompleted, Tail: "done"}); err != nil {
		t.Fatal(err)
	}
	notFoundEverywhere(t, b, "ra")
	out, err := a.WaitRun(ctx, "ra")
	if err != nil || out.Status != run.StatusCompleted || out.Content != "done" || out.TenantID != "a" {
		t.Fatalf("a.WaitRun: %+v, %v", out, err)
	}
	want, err := d.StoredEvents(ctx, "ra", 0)
	if err != nil || len(want) == 0 {
		t.Fatalf("d.StoredEvents: %v, %v", want, err)
	}
	stored, err := a.StoredEvents(ctx, "ra", 0)
	if err != nil || len(stored) != len(want) {
		t.Fatalf("a.StoredEvents: %d events, %v; want %d", len(stored), err, len(want))
	}
	var followed []run.Event
	for ev, err := range a.Events(ctx, "ra", 0) {
		if err != nil {
			t.Fatalf("a.Events: %v", err)
		}
		followed = append(followed, ev)
	}
	if len(followed) != len(want) || followed[len(followed)-1].Type != run.EventRunCompleted {
		t.Fatalf("a.Events: %d events, last %v; want %d ending run.completed", len(followed), followed, len(want))
	}
	msgs, err := a.Messages(ctx, "ra")
	wantMsgs, _ := d.Messages(ctx, "ra")
	if err != nil || len(msgs) == 0 || len(msgs) != len(wantMsgs) || msgs[len(msgs)-1].Content != "done" {
		t.Fatalf("a.Messages: %+v, %v; want %+v", msgs, err, wantMsgs)
	}
}

// ListRuns with a tenant: the tenant's runs only, with an agent too, paged.
func TestTenantListRuns(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for _, r := range []struct{ id, tenant, agent string }{
		{"a1", "a", "x"}, {"b1", "b", "x"}, {"o1", "", "x"}, {"a2", "a", "y"}, {"a3", "a", "x"}, {"b2", "b", "y"},
	} {
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: r.id, AgentName: r.agent, Input: "hi", TenantID: r.tenant}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(l func(context.Context, run.ListParams) (*run.ListResult, error), p run.ListParams) string {
		t.Helper()
		var ids []string
		for {
			res, err := l(ctx, p)
			if err != nil {
				t.Fatalf("ListRuns(%+v): %v", p, err)
			}
			ids = append(ids, runIDs(res.Runs)...)
			if res.NextCursor == "" {
				return fmt.Sprint(ids)
			}
			p.Cursor = res.NextCursor
		}
	}
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	for _, c := range []struct {
		what string
		l    func(context.Context, run.ListParams) (*run.ListResult, error)
		p    run.ListParams
		want string
	}{
		{"everything", d.ListRuns, run.ListParams{}, "[b2 a3 a2 o1 b1 a1]"},
		{"tenant a", d.ListRuns, run.ListParams{TenantID: "a"}, "[a3 a2 a1]"},
		{"tenant a, paged", d.ListRuns, run.ListParams{TenantID: "a", Limit: 1}, "[a3 a2 a1]"},
		{"tenant a, agent x", d.ListRuns, run.ListParams{TenantID: "a", AgentName: "x"}, "[a3 a1]"},
		{"tenant a, agent x, paged", d.ListRuns, run.ListParams{TenantID: "a", AgentName: "x", Limit: 1}, "[a3 a1]"},
		{"tenant b, agent x", d.ListRuns, run.ListParams{TenantID: "b", AgentName: "x"}, "[b1]"},
		{"tenant c", d.ListRuns, run.ListParams{TenantID: "c"}, "[]"},
		{"agent x", d.ListRuns, run.ListParams{AgentName: "x"}, "[a3 o1 b1 a1]"},
		{"a's view", a.ListRuns, run.ListParams{}, "[a3 a2 a1]"},
		{"a's view, agent y", a.ListRuns, run.ListParams{AgentName: "y"}, "[a2]"},
		{"b's view asking for a's", b.ListRuns, run.ListParams{TenantID: "a"}, "[b2 b1]"},
	} {
		if got := list(c.l, c.p); got != c.want {
			t.Errorf("%s: %s; want %s", c.what, got, c.want)
		}
	}
}

// A tenant's cancel request applies only to a run of that tenant, now or
// later; the operator's to any run of the id.
func TestTenantCancel(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")

	// b cancels a's pending run: answered as for an id with no run, and
	// a's run is untouched, also when a worker claims it.
	submitAs(t, d, "a", "ra")
	if ok, err := b.CancelRun(ctx, "ra"); err != nil || !ok {
		t.Fatalf("b cancels a's run: %v, %v; want true, as for an unknown id", ok, err)
	}
	if got := status(t, d, "ra"); got != run.StatusPending {
		t.Fatalf("a's run after b's cancel: %s; want pending", got)
	}
	started, err := ex(d).StartRun(ctx, akey("ra"), nil)
	if err != nil || started.Status != run.StatusRunning {
		t.Fatalf("start of a's run after b's cancel: %+v, %v; want running", started, err)
	}
	if ok, err := b.CancelRun(ctx, "ra"); err != nil || !ok {
		t.Fatalf("b cancels a's running run: %v, %v", ok, err)
	}
	if got := status(t, d, "ra"); got != run.StatusRunning {
		t.Fatalf("a's running run after b's cancel: %s; want running", got)
	}
	if err := ex(d).AppendContent(ctx, akey("ra"), 1, "part"); err != nil {
		t.Fatalf("a's run after b's cancel cannot write: %v", err)
	}
	evs, err := d.StoredEvents(ctx, "ra", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == run.EventRunCancelled {
			t.Fatalf("b's cancel left a run.cancelled event on a's run: %v", evs)
		}
	}
	// a's own cancel applies.
	if ok, err := a.CancelRun(ctx, "ra"); err != nil || !ok {
		t.Fatalf("a cancels its run: %v, %v", ok, err)
	}
	if got := status(t, d, "ra"); got != run.StatusCancelled {
		t.Fatalf("a's run after a's cancel: %s; want cancelled", got)
	}

	// b's cancel-before-start of an id that a then submits: a's run starts.
	if ok, err := b.CancelRun(ctx, "fresh-id"); err != nil || !ok {
		t.Fatalf("b cancels fresh-id: %v, %v", ok, err)
	}
	submitAs(t, d, "a", "fresh-id")
	started, err = ex(d).StartRun(ctx, akey("fresh-id"), nil)
	if err != nil || started.Status != run.StatusRunning || started.Attempt != 1 {
		t.Fatalf("start of a's fresh-id after b's cancel-before-start: %+v, %v; want running", started, err)
	}
	// A background run's claim, too.
	if ok, err := b.CancelRun(ctx, "fresh-bg"); err != nil || !ok {
		t.Fatalf("b cancels fresh-bg: %v, %v", ok, err)
	}
	if _, err := a.SubmitRun(ctx, db.SubmitParams{RunID: "fresh-bg", AgentName: "a", Input: "hi", Enqueue: true}); err != nil {
		t.Fatal(err)
	}
	var job int64
	if err := d.Pool().QueryRow(ctx, `SELECT job_id FROM kern_run WHERE id = $1`, akey("fresh-bg")).Scan(&job); err != nil {
		t.Fatal(err)
	}
	if started, err := ex(d).StartRun(ctx, akey("fresh-bg"), &job); err != nil || started.Status != run.StatusRunning {
		t.Fatalf("start of a's background fresh-bg after b's cancel-before-start: %+v, %v; want running", started, err)
	}

	// a's own cancel-before-start cancels a's run at its start. The
	// operator's cancel-before-start of an id names the operator's own run
	// to come (ids are per tenant): a's run of the id starts.
	if ok, err := a.CancelRun(ctx, "id2"); err != nil || !ok {
		t.Fatalf("a cancels id2: %v, %v", ok, err)
	}
	if ok, err := d.CancelRun(ctx, "id3"); err != nil || !ok {
		t.Fatalf("operator cancels id3: %v, %v", ok, err)
	}
	for id, want := range map[string]run.Status{"id2": run.StatusCancelled, "id3": run.StatusRunning} {
		submitAs(t, d, "a", id)
		started, err := ex(d).StartRun(ctx, akey(id), nil)
		if err != nil || started.Status != want {
			t.Fatalf("start of a's %s after a cancel-before-start: %+v, %v; want %s", id, started, err, want)
		}
	}
	submitAs(t, d, "", "id3")
	if started, err := ex(d).StartRun(ctx, "id3", nil); err != nil || started.Status != run.StatusCancelled {
		t.Fatalf("start of the operator's id3 after its cancel-before-start: %+v, %v; want cancelled", started, err)
	}
	// b's request for a pre-cancelled id of b's own cancels b's run.
	if ok, err := b.CancelRun(ctx, "id4"); err != nil || !ok {
		t.Fatalf("b cancels id4: %v, %v", ok, err)
	}
	submitAs(t, d, "b", "id4")
	if started, err := ex(d).StartRun(ctx, engine.RunKey("b", "id4"), nil); err != nil || started.Status != run.StatusCancelled {
		t.Fatalf("start of b's id4 after b's cancel-before-start: %+v, %v; want cancelled", started, err)
	}

	// The operator cancels a tenant's run.
	submitAs(t, d, "a", "ra2")
	if ok, err := d.CancelRun(ctx, "ra2"); err != nil || !ok {
		t.Fatalf("operator cancels a's run: %v, %v", ok, err)
	}
	if got := status(t, d, "ra2"); got != run.StatusCancelled {
		t.Fatalf("a's run after the operator's cancel: %s; want cancelled", got)
	}

	// A finished run: a's cancel says false and leaves no request; b's is
	// answered as for an unknown id and changes nothing.
	submitAs(t, d, "a", "done")
	if _, err := ex(d).StartRun(ctx, akey("done"), nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, akey("done"), 1, engine.Finish{Status: run.StatusCompleted, Tail: "x"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.CancelRun(ctx, "done"); err != nil || ok {
		t.Fatalf("a cancels its completed run: %v, %v; want false", ok, err)
	}
	if ok, err := b.CancelRun(ctx, "done"); err != nil || !ok {
		t.Fatalf("b cancels a's completed run: %v, %v; want true, as for an unknown id", ok, err)
	}
	if got := status(t, d, "done"); got != run.StatusCompleted {
		t.Fatalf("a's completed run after cancels: %s", got)
	}
	var aRequests int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_cancel WHERE run_id = $1`, akey("done")).Scan(&aRequests); err != nil || aRequests != 0 {
		t.Fatalf("a's cancel of its finished run left %d requests (%v)", aRequests, err)
	}
	if _, err := a.CancelRun(ctx, ""); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("a cancels an empty id: %v; want run.ErrInvalidArgument", err)
	}
}

// Workers are told of a cancel request (NOTIFY <schema>.kern_cancel) by the key of
// the run it applies to: never another tenant's request as one for a
// tenant's run. Notifications reach a listener in commit order.
func TestTenantCancelNotifies(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		submitAs(t, d, "a", id)
		if _, err := ex(d).StartRun(ctx, akey(id), nil); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := d.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN "public.kern_cancel"`); err != nil { // channels carry the schema
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `UNLISTEN *`) }()
	next := func() string {
		t.Helper()
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("wait for a notification: %v", err)
		}
		return n.Payload
	}
	cancel := func(who func(context.Context, string) (bool, error), id string) {
		t.Helper()
		if ok, err := who(ctx, id); err != nil || !ok {
			t.Fatalf("cancel %s: %v, %v", id, ok, err)
		}
	}
	// A request is notified by its key (engine.RunKey), which names one
	// tenant's run: b's request for r1 names b's r1, never a's, so a's
	// worker of r1 is not woken by it.
	cancel(b.CancelRun, "r1")
	cancel(a.CancelRun, "r2")
	if got := next(); got != engine.RunKey("b", "r1") {
		t.Fatalf("after b's cancel of r1: notified of %q; want b's key of r1", got)
	}
	if got := next(); got != akey("r2") {
		t.Fatalf("after a's cancel of r2: notified of %q; want a's key of r2", got)
	}
	// The operator's request names a's run: a's is the only run of r3.
	cancel(d.CancelRun, "r3")
	if got := next(); got != akey("r3") {
		t.Fatalf("after the operator's cancel of r3: notified of %q; want a's key of r3", got)
	}
	if got := status(t, d, "r1"); got != run.StatusRunning {
		t.Fatalf("r1 after b's cancel: %s; want running", got)
	}
}

// Idempotency keys are the tenant's own.
func TestTenantIdempotencyKeys(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	p := func(id string) db.SubmitParams {
		return db.SubmitParams{RunID: id, AgentName: "x", Input: "hi", IdempotencyKey: "k", Enqueue: true}
	}
	ra, err := a.SubmitRun(ctx, p("ra"))
	if err != nil || ra.RunID != "ra" || ra.TenantID != "a" {
		t.Fatalf("a's submit: %+v, %v", ra, err)
	}
	rb, err := b.SubmitRun(ctx, p("rb"))
	if err != nil || rb.RunID != "rb" || rb.TenantID != "b" {
		t.Fatalf("b's submit with a's key: %+v, %v; want a run of its own", rb, err)
	}
	op, err := d.SubmitRun(ctx, p("rop"))
	if err != nil || op.RunID != "rop" || op.TenantID != "" {
		t.Fatalf("the operator's submit with the key: %+v, %v; want a run of its own", op, err)
	}
	again, err := a.SubmitRun(ctx, p("ra-again"))
	if err != nil || again.RunID != "ra" || again.TenantID != "a" {
		t.Fatalf("a's second submit: %+v, %v; want a's first run", again, err)
	}
	// Through d with SubmitParams.TenantID, and a foreground submit.
	q := p("rb-again")
	q.TenantID, q.Enqueue = "b", false
	if again, err := d.SubmitRun(ctx, q); err != nil || again.RunID != "rb" {
		t.Fatalf("b's second submit through d: %+v, %v; want b's first run", again, err)
	}
	// A key of tenant c with a's run id: run ids are per tenant, so c gets
	// a run of its own, and a's run is not returned.
	if out, err := forTenant(t, d, "c").SubmitRun(ctx, p("ra")); err != nil || out.TenantID != "c" || out.RunID != "ra" {
		t.Fatalf("c's submit of a's id: %+v, %v; want c's own run ra", out, err)
	}
	// Concurrent first submits of one key by two tenants: two runs.
	type res struct {
		out *run.Output
		err error
	}
	done := make(chan res, 2)
	for _, v := range []*db.TenantDB{forTenant(t, d, "d"), forTenant(t, d, "e")} {
		go func() {
			out, err := v.SubmitRun(ctx, db.SubmitParams{RunID: "c-" + v.Tenant(), AgentName: "x", Input: "hi", IdempotencyKey: "c"})
			done <- res{out, err}
		}()
	}
	for range 2 {
		if r := <-done; r.err != nil || r.out.RunID != "c-"+r.out.TenantID {
			t.Fatalf("concurrent submit: %+v, %v; want a run of each tenant", r.out, r.err)
		}
	}
	var n int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run`).Scan(&n); err != nil || n != 6 {
		t.Fatalf("%d runs (%v); want 6", n, err)
	}
}

// Schedules are named per tenant, and fire runs of their tenant.
func TestTenantSchedules(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")
	sa, err := a.PutSchedule(ctx, run.Schedule{Name: "n", AgentName: "x", Prompt: "from a", Cron: "@hourly"})
	if err != nil || sa.TenantID != "a" {
		t.Fatalf("a's put: %+v, %v", sa, err)
	}
	sb, err := b.PutSchedule(ctx, run.Schedule{Name: "n", AgentName: "x", Prompt: "from b", Cron: "@daily", TenantID: "a"})
	if err != nil || sb.TenantID != "b" {
		t.Fatalf("b's put (asking for tenant a): %+v, %v; want b's", sb, err)
	}
	putSchedule(t, d, run.Schedule{Name: "n", AgentName: "x", Prompt: "from the operator", Cron: "@weekly"})

	for _, c := range []struct {
		v      *db.TenantDB
		prompt string
	}{{a, "from a"}, {b, "from b"}} {
		list, err := c.v.ListSchedules(ctx)
		if err != nil || len(list) != 1 || list[0].Name != "n" || list[0].Prompt != c.prompt || list[0].TenantID != c.v.Tenant() {
			t.Fatalf("%s's list: %+v, %v; want its own n only", c.v.Tenant(), list, err)
		}
		got, err := c.v.GetSchedule(ctx, "n")
		if err != nil || got.Prompt != c.prompt || got.TenantID != c.v.Tenant() {
			t.Fatalf("%s's get: %+v, %v", c.v.Tenant(), got, err)
		}
	}
	all, err := d.ListSchedules(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("d.ListSchedules: %+v, %v; want 3", all, err)
	}
	var tenants []string
	for _, s := range all {
		tenants = append(tenants, s.TenantID+":"+s.Prompt)
	}
	if fmt.Sprint(tenants) != "[:from the operator a:from a b:from b]" {
		t.Fatalf("d.ListSchedules: %v", tenants)
	}

	// One tenant's name is not the other's.
	if _, err := a.PutSchedule(ctx, run.Schedule{Name: "only-a", AgentName: "x", Prompt: "p", Cron: "@hourly"}); err != nil {
		t.Fatal(err)
	}
	if s, err := b.GetSchedule(ctx, "only-a"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b gets a's only-a: %+v, %v; want run.ErrNotFound", s, err)
	}
	if err := b.DeleteSchedule(ctx, "only-a"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b deletes a's only-a: %v; want run.ErrNotFound", err)
	}
	if err := d.DeleteSchedule(ctx, "only-a"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("the operator deletes a's only-a: %v; want run.ErrNotFound (the operator's own names)", err)
	}
	if _, err := a.GetSchedule(ctx, "only-a"); err != nil {
		t.Fatalf("a's only-a after the others' deletes: %v", err)
	}
	// A replace of b's n leaves a's alone.
	if _, err := b.PutSchedule(ctx, run.Schedule{Name: "n", AgentName: "x", Prompt: "b again", Cron: "@daily"}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetSchedule(ctx, "n"); err != nil || got.Prompt != "from a" || !got.CreatedAt.Equal(sa.CreatedAt) {
		t.Fatalf("a's n after b's replace: %+v, %v", got, err)
	}
	// b's delete of n deletes b's only.
	if err := b.DeleteSchedule(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteSchedule(ctx, "n"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b deletes n again: %v; want run.ErrNotFound", err)
	}
	if _, err := b.GetSchedule(ctx, "n"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b's n after delete: %v; want run.ErrNotFound", err)
	}
	if got, err := a.GetSchedule(ctx, "n"); err != nil || got.Prompt != "from a" {
		t.Fatalf("a's n after b's delete: %+v, %v", got, err)
	}
	if ns := schedulesNamed(t, d, "n"); fmt.Sprint(ns) != "[ a]" {
		t.Fatalf("the tenants of n after b's delete: %v; want the operator's and a's", ns)
	}

	// Firing: each schedule's run is its tenant's, and its LastRunID is
	// set on that schedule only.
	if _, err := b.PutSchedule(ctx, run.Schedule{Name: "n", AgentName: "x", Prompt: "from b", Cron: "@hourly"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_schedule SET next_run_at = now() - interval '1 minute' WHERE name = 'n'`); err != nil {
		t.Fatal(err)
	}
	fired, err := d.Engine(engine.Key{}).FireSchedules(ctx, []string{"x"}, 100)
	if err != nil || len(fired.Runs) != 3 {
		t.Fatalf("fire: %+v, %v; want 3 runs", fired, err)
	}
	byTenant := map[string]*run.Output{}
	for _, id := range fired.Runs {
		out, err := d.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		byTenant[out.TenantID] = out
	}
	for _, c := range []struct{ tenant, prompt string }{{"", "from the operator"}, {"a", "from a"}, {"b", "from b"}} {
		out := byTenant[c.tenant]
		if out == nil || out.Input != c.prompt || out.Name != "n" {
			t.Fatalf("fired run of tenant %q: %+v; want prompt %q", c.tenant, out, c.prompt)
		}
	}
	for _, v := range []*db.TenantDB{a, b} {
		s, err := v.GetSchedule(ctx, "n")
		if err != nil || s.LastRunID != byTenant[v.Tenant()].RunID {
			t.Fatalf("%s's n after firing: %+v, %v; want LastRunID %s", v.Tenant(), s, err, byTenant[v.Tenant()].RunID)
		}
		if !s.NextRunAt.After(time.Now()) {
			t.Fatalf("%s's n after firing: NextRunAt %v not moved on", v.Tenant(), s.NextRunAt)
		}
		if _, err := v.GetRun(ctx, s.LastRunID); err != nil {
			t.Fatalf("%s reads the run its schedule fired: %v", v.Tenant(), err)
		}
	}
	if _, err := b.GetRun(ctx, byTenant["a"].RunID); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b reads a's fired run: %v; want run.ErrNotFound", err)
	}
	if op := scheduleNamed(t, d, "n"); op.TenantID != "" || op.LastRunID != byTenant[""].RunID {
		t.Fatalf("the operator's n after firing: %+v; want LastRunID %s", op, byTenant[""].RunID)
	}
}

// schedulesNamed lists the tenants that have a schedule name.
func schedulesNamed(t *testing.T, d *db.DB, name string) []string {
	t.Helper()
	list, err := d.ListSchedules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var tenants []string
	for _, s := range list {
		if s.Name == name {
			tenants = append(tenants, s.TenantID)
		}
	}
	return tenants
}

func TestTenantAPIKeys(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)

	before := time.Now().Add(-time.Minute)
	s1, err := d.CreateAPIKey(ctx, "acme", "k1")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := d.CreateAPIKey(ctx, "acme", "k2")
	if err != nil {
		t.Fatal(err)
	}
	s3, err := d.CreateAPIKey(ctx, "globex", "k3")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{s1, s2, s3} {
		if !strings.HasPrefix(s, "kern_") || len(s) != len("kern_")+43 || strings.ContainsAny(s[5:], "+/=") {
			t.Fatalf("secret %q: want kern_ and 43 characters of base64url", s)
		}
	}
	if s1 == s2 || s2 == s3 || s1 == s3 {
		t.Fatal("two keys got the same secret")
	}
	for _, c := range []struct{ secret, tenant string }{{s1, "acme"}, {s2, "acme"}, {s3, "globex"}} {
		tenant, ok, err := d.AuthenticateAPIKey(ctx, c.secret)
		if err != nil || !ok || tenant != c.tenant {
			t.Fatalf("authenticate: %q, %v, %v; want %s", tenant, ok, err, c.tenant)
		}
	}
	for _, bad := range []string{
		"", "kern_", s1[:len(s1)-1], s1 + "x", strings.ToUpper(s1), "sk_" + s1[5:], s1[5:], " " + s1,
		"kern_" + strings.Repeat("A", 43), "kern_" + strings.Repeat("a", 300),
	} {
		tenant, ok, err := d.AuthenticateAPIKey(ctx, bad)
		if err != nil || ok || tenant != "" {
			t.Errorf("authenticate %q: %q, %v, %v; want \"\", false, nil", bad, tenant, ok, err)
		}
	}

	// Only a hash is stored: no column holds the secret, or its random part.
	for _, s := range []string{s1, s2, s3} {
		var found int
		err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_api_key k
			WHERE strpos(row_to_json(k)::text, $1) > 0 OR strpos(row_to_json(k)::text, $2) > 0
			   OR strpos(row_to_json(k)::text, $3) > 0`,
			s, s[5:], hex.EncodeToString([]byte(s))).Scan(&found)
		if err != nil || found != 0 {
			t.Fatalf("%d rows of kern_api_key hold a secret (%v)", found, err)
		}
	}
	var hashed bool
	sum := sha256.Sum256([]byte(s1))
	if err := d.Pool().QueryRow(ctx, `SELECT secret_sha256 = $1 FROM kern_api_key WHERE name = 'k1'`, sum[:]).Scan(&hashed); err != nil || !hashed {
		t.Fatalf("k1's stored hash is not the secret's SHA-256: %v, %v", hashed, err)
	}

	for _, c := range []struct{ tenant, name string }{{"", "k"}, {"acme", ""}, {"  ", "k"}, {"acme", " \t"},
		{"acme", "a\x00b"}, {strings.Repeat("t", 256), "k"}, {"acme", strings.Repeat("n", 256)}} {
		if _, err := d.CreateAPIKey(ctx, c.tenant, c.name); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("CreateAPIKey(%q, %q): %v; want run.ErrInvalidArgument", c.tenant, c.name, err)
		}
	}
	if _, err := d.CreateAPIKey(ctx, "acme", "k1"); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v; want run.ErrAlreadyExists", err)
	}
	if _, err := d.CreateAPIKey(ctx, "globex", "k1"); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("duplicate name of another tenant: %v; want run.ErrAlreadyExists", err)
	}

	if err := d.RevokeAPIKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if tenant, ok, err := d.AuthenticateAPIKey(ctx, s1); err != nil || ok || tenant != "" {
		t.Fatalf("authenticate a revoked key: %q, %v, %v; want false", tenant, ok, err)
	}
	if tenant, ok, err := d.AuthenticateAPIKey(ctx, s2); err != nil || !ok || tenant != "acme" {
		t.Fatalf("authenticate k2 after k1's revoke: %q, %v, %v", tenant, ok, err)
	}
	keys, err := d.ListAPIKeys(ctx)
	if err != nil || len(keys) != 3 {
		t.Fatalf("list: %+v, %v", keys, err)
	}
	revokedAt := keys[0].RevokedAt
	if keys[0].Name != "k1" || keys[0].TenantID != "acme" || revokedAt == nil || revokedAt.Before(keys[0].CreatedAt) {
		t.Fatalf("k1 listed as %+v; want revoked", keys[0])
	}
	for i, want := range []struct{ name, tenant string }{{"k1", "acme"}, {"k2", "acme"}, {"k3", "globex"}} {
		k := keys[i]
		if k.Name != want.name || k.TenantID != want.tenant || k.CreatedAt.Before(before) || k.CreatedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("key %d: %+v; want %s of %s", i, k, want.name, want.tenant)
		}
		if i > 0 && k.RevokedAt != nil {
			t.Errorf("key %s listed revoked: %v", k.Name, k.RevokedAt)
		}
	}
	// Revoking again changes nothing; a revoked key's name stays taken.
	if err := d.RevokeAPIKey(ctx, "k1"); err != nil {
		t.Fatalf("revoke again: %v", err)
	}
	keys, _ = d.ListAPIKeys(ctx)
	if len(keys) != 3 || keys[0].RevokedAt == nil || !keys[0].RevokedAt.Equal(*revokedAt) {
		t.Fatalf("k1 after a second revoke: %+v; want RevokedAt %v", keys[0], revokedAt)
	}
	if _, err := d.CreateAPIKey(ctx, "acme", "k1"); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("the name of a revoked key: %v; want run.ErrAlreadyExists", err)
	}
	if err := d.RevokeAPIKey(ctx, "nope"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("revoke unknown: %v; want run.ErrNotFound", err)
	}
	if keys, _ := d.ListAPIKeys(ctx); !slices.EqualFunc(keys, []string{"k1", "k2", "k3"}, func(k db.APIKey, n string) bool { return k.Name == n }) {
		t.Fatalf("keys after failed creates: %+v", keys)
	}
}

func TestTenantForTenantInvalid(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	for _, tenant := range []string{"", "a\x00b", "\xff", strings.Repeat("t", 256)} {
		if v, err := d.ForTenant(tenant); !errors.Is(err, run.ErrInvalidArgument) || v != nil {
			t.Errorf("ForTenant(%q) = %v, %v; want run.ErrInvalidArgument", tenant, v, err)
		}
	}
	if _, err := d.SubmitRun(context.Background(), db.SubmitParams{RunID: "r", AgentName: "a", Input: "hi", TenantID: "a\x00"}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("submit with a NUL in the tenant id: %v; want run.ErrInvalidArgument", err)
	}
}

// ListRuns of one tenant reads about a page of rows per page, as
// TestListRunsReadsAPagePerPage checks for the other filters: for a tenant
// with no runs, and for one tenant deep into its runs. Under a generic plan
// (where $7, the tenant, is unknown) the statement must still be able to
// use the partial index kern_run_tenant_idx (of non-empty tenants): with
// kern_run_created_idx gone, nothing else serves it. (Whether a generic
// plan prefers it to kern_run_created_idx depends on the statistics, as for
// an agent's runs and kern_run_agent_idx.)
func TestTenantListRunsReadsAPagePerPage(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)
	const runs = 20000
	populate(t, ctx, url, func(d *db.DB) {
		if _, err := d.Pool().Exec(ctx, `
			INSERT INTO kern_run (id, agent_name, input, created_at, tenant_id)
			SELECT 'r-' || i, 'common', 'x', now() - make_interval(secs => 20000 - i),
				CASE WHEN i % 100 = 0 THEN 'rare' WHEN i % 2 = 0 THEN 'big' ELSE '' END
			FROM generate_series(1, 20000) i;
			ANALYZE kern_run`); err != nil {
			t.Fatal(err)
		}
	})
	lister := kerntest.Open(t, kerntest.WithPoolSize(url, 1))
	for _, mode := range []string{"auto", "force_generic_plan"} {
		if mode == "force_generic_plan" {
			if _, err := lister.Pool().Exec(ctx, `DROP INDEX kern_run_created_idx`); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := lister.Pool().Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			params run.ListParams
			pages  int
			want   int // runs on each page
		}{
			{"tenant with no runs", run.ListParams{TenantID: "nobody"}, 1, 0},
			{"one tenant, deep", run.ListParams{TenantID: "rare", Limit: 20}, 8, 20},
		} {
			p := c.params
			for page := range c.pages {
				// Enough executions of the statement for Postgres to
				// consider its generic plan.
				for range 6 {
					if _, err := lister.ListRuns(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				before := rowsRead(t, ctx, lister)["kern_run"]
				res, err := lister.ListRuns(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				read := rowsRead(t, ctx, lister)["kern_run"] - before
				if len(res.Runs) != c.want {
					t.Fatalf("%s, %s, page %d: %d runs, want %d", mode, c.name, page+1, len(res.Runs), c.want)
				}
				if read > int64(c.want)+10 {
					t.Fatalf("%s, %s, page %d: read %d of %d runs for a page of %d", mode, c.name, page+1, read, runs, c.want)
				}
				for _, r := range res.Runs {
					if r.TenantID != c.params.TenantID {
						t.Fatalf("%s, %s: listed %s of tenant %q", mode, c.name, r.RunID, r.TenantID)
					}
				}
				p.Cursor = res.NextCursor
			}
		}
	}
}
