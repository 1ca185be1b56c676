package db_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/tern/v2/migrate"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/migrations"
	"github.com/kern-go/kern/run"
)

// Run ids are per tenant: two tenants submit the same id and get a run
// each, neither able to tell the other's exists; every read, write, cancel
// and event of one leaves the other's alone. The operator reads the one
// run of an id, its own first, and is told when the id is ambiguous.
func TestRunIDsArePerTenant(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	a, b := forTenant(t, d, "a"), forTenant(t, d, "b")

	submit := func(v *db.TenantDB, id, input string) {
		t.Helper()
		out, created, err := v.SubmitRunOrExisting(ctx, db.SubmitParams{RunID: id, AgentName: "x", Input: input, Enqueue: true})
		if err != nil || !created || out.RunID != id || out.TenantID != v.Tenant() || out.Input != input {
			t.Fatalf("%s submits %s: %+v, created %v, %v; want a new run of its own", v.Tenant(), id, out, created, err)
		}
	}
	submit(a, "same", "a's secret")
	submit(b, "same", "b's question")
	submit(a, "only-a", "hi")

	// Each tenant reads its own run of the id, never the other's.
	for v, want := range map[*db.TenantDB]string{a: "a's secret", b: "b's question"} {
		out, err := v.GetRun(ctx, "same")
		if err != nil || out.Input != want || out.RunID != "same" {
			t.Fatalf("%s reads same: %+v, %v; want input %q", v.Tenant(), out, err, want)
		}
		msgs, err := v.Messages(ctx, "same")
		if err != nil || len(msgs) != 1 || msgs[0].Content != want {
			t.Fatalf("%s's messages of same: %+v, %v", v.Tenant(), msgs, err)
		}
	}
	if _, err := b.GetRun(ctx, "only-a"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("b reads a's only-a: %v; want run.ErrNotFound", err)
	}
	// A repeated id within a tenant is still a duplicate.
	if _, err := a.SubmitRun(ctx, db.SubmitParams{RunID: "same", AgentName: "x", Input: "again"}); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("a submits same twice: %v; want run.ErrAlreadyExists", err)
	}

	// The operator: the one tenant's run of an id; ambiguous when two
	// tenants have one and the operator none; its own run first.
	if out, err := d.GetRun(ctx, "only-a"); err != nil || out.TenantID != "a" {
		t.Fatalf("operator reads only-a: %+v, %v; want a's run", out, err)
	}
	for what, err := range map[string]error{
		"GetRun":   second(d.GetRun(ctx, "same")),
		"WaitRun":  second(d.WaitRun(ctx, "same")),
		"Cancel":   second(d.CancelRun(ctx, "same")),
		"Events":   second(d.StoredEvents(ctx, "same", 0)),
		"Messages": second(d.Messages(ctx, "same")),
		"Approve":  d.ApproveToolCall(ctx, "same", "c1"),
	} {
		if !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("operator %s of an id two tenants use: %v; want run.ErrInvalidArgument", what, err)
		}
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "same", AgentName: "x", Input: "the operator's"}); err != nil {
		t.Fatalf("operator submits same: %v", err)
	}
	if out, err := d.GetRun(ctx, "same"); err != nil || out.TenantID != "" || out.Input != "the operator's" {
		t.Fatalf("operator reads same: %+v, %v; want its own", out, err)
	}

	// a's cancel cancels a's run; b's run of the id is untouched.
	if ok, err := a.CancelRun(ctx, "same"); err != nil || !ok {
		t.Fatalf("a cancels same: %v, %v", ok, err)
	}
	for v, want := range map[*db.TenantDB]run.Status{a: run.StatusCancelled, b: run.StatusPending} {
		if out, err := v.GetRun(ctx, "same"); err != nil || out.Status != want {
			t.Fatalf("%s's same after a's cancel: %+v, %v; want %s", v.Tenant(), out, err, want)
		}
	}
	// b's run is claimed by its key, and runs.
	var job int64
	if err := d.Pool().QueryRow(ctx, `SELECT job_id FROM kern_run WHERE id = $1`, engine.RunKey("b", "same")).Scan(&job); err != nil {
		t.Fatal(err)
	}
	claim, err := ex(d).StartRun(ctx, engine.RunKey("b", "same"), &job)
	if err != nil || claim.Status != run.StatusRunning || claim.RunID != "same" || claim.TenantID != "b" {
		t.Fatalf("start of b's same: %+v, %v; want running", claim, err)
	}

	// Each tenant's events are its run's own, named by the id.
	for v, want := range map[*db.TenantDB]run.EventType{a: run.EventRunCancelled, b: run.EventRunStarted} {
		evs, err := v.StoredEvents(ctx, "same", 0)
		if err != nil || len(evs) != 1 || evs[0].RunID != "same" || evs[0].Type != want {
			t.Fatalf("%s's events of same: %+v, %v; want its one %s, named by the id", v.Tenant(), evs, err, want)
		}
	}

	// Lists name runs by id, with their tenant.
	res, err := d.ListRuns(ctx, run.ListParams{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for {
		for _, r := range res.Runs {
			all = append(all, r.TenantID+"/"+r.RunID)
		}
		if res.NextCursor == "" {
			break
		}
		if res, err = d.ListRuns(ctx, run.ListParams{Limit: 2, Cursor: res.NextCursor}); err != nil {
			t.Fatalf("next page (a cursor past a tenant's run): %v", err)
		}
	}
	if got := fmt.Sprint(all); got != "[/same a/only-a b/same a/same]" {
		t.Fatalf("every run, newest first: %s", got)
	}
}

// A tenant id with a control character is refused: a run's key joins the
// tenant and the id with one.
func TestTenantIDsRefuseControlCharacters(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 10*time.Second)
	if _, err := d.ForTenant("a" + engine.RunKeySep + "b"); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("ForTenant with the key separator: %v; want run.ErrInvalidArgument", err)
	}
	_, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "r", AgentName: "x", Input: "hi", TenantID: "t\n"})
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("submit with a tenant id holding a newline: %v; want run.ErrInvalidArgument", err)
	}
	if _, err := d.CreateAPIKey(ctx, "t\x1e", "k"); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("API key for a tenant id with a control character: %v; want run.ErrInvalidArgument", err)
	}
}

// Migration 016 re-keys what a database of 015 holds: a tenant's run, its
// events, its answers, its River job and its cancel requests are found by
// the tenant after the migration, and the operator's runs are unchanged.
func TestMigrationRekeysTenantRuns(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 60*time.Second)
	conn, err := d.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), "kern_schema_version")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, 15); err != nil {
		t.Fatalf("down to 015: %v", err)
	}
	// As 015 wrote them: ids global, the tenant in a column.
	if _, err := conn.Exec(ctx, `
		INSERT INTO kern_run (id, agent_name, input, tenant_id, status) VALUES
			('t-run', 'x', 'tenant input', 'acme', 'pending'),
			('op-run', 'x', 'operator input', '', 'pending');
		INSERT INTO kern_run_event (run_id, seq, type) VALUES ('t-run', 1, 'run.submitted'), ('op-run', 1, 'run.submitted');
		INSERT INTO kern_run_cancel (run_id, tenant_id) VALUES ('t-run', 'acme'), ('op-run', ''), ('future', 'acme');
		INSERT INTO river_job (kind, args, queue, state, max_attempts, priority)
			VALUES ('kern_run', '{"run_id": "t-run", "agent": "x"}', 'kern_x', 'available', 25, 2);`); err != nil {
		t.Fatal(err)
	}
	if err := m.Migrate(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	acme := forTenant(t, d, "acme")
	out, err := acme.GetRun(ctx, "t-run")
	if err != nil || out.Input != "tenant input" || out.RunID != "t-run" {
		t.Fatalf("acme's run after the migration: %+v, %v", out, err)
	}
	if evs, err := acme.StoredEvents(ctx, "t-run", 0); err != nil || len(evs) != 1 {
		t.Fatalf("acme's events after the migration: %v, %v", evs, err)
	}
	if out, err := d.GetRun(ctx, "op-run"); err != nil || out.Input != "operator input" {
		t.Fatalf("the operator's run after the migration: %+v, %v", out, err)
	}
	var jobKey string
	if err := d.Pool().QueryRow(ctx, `SELECT args->>'run_id' FROM river_job WHERE kind = 'kern_run'`).Scan(&jobKey); err != nil || jobKey != engine.RunKey("acme", "t-run") {
		t.Fatalf("the job's run_id: %q, %v; want acme's key", jobKey, err)
	}
	var requests []string
	rows, err := d.Pool().Query(ctx, `SELECT run_id FROM kern_run_cancel ORDER BY run_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		requests = append(requests, k)
	}
	if got, want := fmt.Sprintf("%q", requests), fmt.Sprintf("%q", []string{engine.RunKey("acme", "future"), engine.RunKey("acme", "t-run"), "op-run"}); got != want {
		t.Fatalf("cancel requests after the migration: %s; want %s", got, want)
	}
	// acme's request for "future" still cancels acme's run of it.
	if _, err := acme.SubmitRun(ctx, db.SubmitParams{RunID: "future", AgentName: "x", Input: "hi"}); err != nil {
		t.Fatal(err)
	}
	if claim, err := ex(d).StartRun(ctx, engine.RunKey("acme", "future"), nil); err != nil || claim.Status != run.StatusCancelled {
		t.Fatalf("acme's future after its pre-migration cancel: %+v, %v; want cancelled", claim, err)
	}
}

func second[T any](_ T, err error) error { return err }
