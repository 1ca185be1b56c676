package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// kern as a role that owns only its schema, through a session pooler.
// PgBouncer does not pass the search_path kern sets at connect time
// (WithSchema) on to the server — it is in ignore_startup_parameters, or
// PgBouncer would refuse the connection — so behind it the role's own
// default is what places kern's statements: ALTER ROLE … SET search_path.
// Without it kern must fail, and say why, not use another schema; with it,
// submit, wait, a worker and cancel work.
func TestLeastPrivilegeRoleThroughSessionPooler(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 90*time.Second)
	adminURL := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	role := fmt.Sprintf("kern_app_%08x", rand.Uint32())
	const schema = "kern"
	for _, stmt := range []string{
		"CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
		"REVOKE CREATE ON SCHEMA public FROM PUBLIC",
		"REVOKE CREATE ON DATABASE " + pgx.Identifier{admin.Config().Database}.Sanitize() + " FROM PUBLIC",
		"CREATE SCHEMA " + schema + " AUTHORIZATION " + role,
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		// After the role's connections and its PgBouncers are gone
		// (cleanups run last-in first-out).
		for _, stmt := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := admin.Exec(context.Background(), stmt); err != nil {
				t.Errorf("%s: %v", stmt, err)
			}
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role) // the test server trusts local connections
	roleURL := u.String()

	// Migrations go straight to Postgres, where the connect-time
	// search_path applies.
	direct, err := db.Open(ctx, roleURL, db.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	err = direct.Migrate(ctx)
	direct.Close()
	if err != nil {
		t.Fatalf("migrate as %s: %v", role, err)
	}
	fake, model := deployModel(t)

	t.Run("without the role's search_path", func(t *testing.T) {
		b := pgtest.NewBouncer(t, roleURL, pgtest.BouncerConfig{Mode: pgtest.PoolSession})
		err := submitThrough(t, ctx, b.URL(), schema, model)
		t.Logf("without ALTER ROLE … SET search_path: %v", err)
		if err == nil {
			t.Fatal("kern worked through PgBouncer with the role's search_path not naming its schema: which tables did it use?")
		}
		// Nothing went anywhere: not to kern's schema, and the role may
		// create nothing in public.
		var inPublic bool
		var runs int
		if err := admin.QueryRow(ctx, "SELECT to_regclass('public.kern_run') IS NOT NULL, (SELECT count(*) FROM kern.kern_run)").Scan(&inPublic, &runs); err != nil || inPublic || runs != 0 {
			t.Fatalf("after the failure: kern_run in public %v, %d runs in %s (%v)", inPublic, runs, schema, err)
		}
		checkBouncer(t, b)
	})

	// Set before this test's PgBouncer makes its server connections: a
	// role's settings apply when a session starts.
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" SET search_path = "+schema); err != nil {
		t.Fatal(err)
	}
	b := pgtest.NewBouncer(t, roleURL, pgtest.BouncerConfig{Mode: pgtest.PoolSession})
	d, err := db.Open(ctx, kerntest.WithPoolSize(b.URL(), kerntest.TestPoolSize), db.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if d.PoolMode() != db.PoolModeSession {
		t.Fatalf("pool mode %q; want session", d.PoolMode())
	}
	var current, user string
	if err := d.Pool().QueryRow(ctx, "SELECT current_schema(), current_user").Scan(&current, &user); err != nil || current != schema || user != role {
		t.Fatalf("through PgBouncer: schema %q as %q (%v); want %q as %q", current, user, err, schema, role)
	}
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	mustAnswer(t, ctx, a, "r1", "hello")
	startHanging(t, ctx, a, fake, "c1")
	cancelToEnd(t, ctx, a, "c1")
	var runs, jobs int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM kern.kern_run), (SELECT count(*) FROM kern.river_job WHERE kind = 'kern_run')").Scan(&runs, &jobs); err != nil || runs != 2 || jobs != 2 {
		t.Fatalf("schema %s has %d runs and %d run jobs (%v); want 2 and 2", schema, runs, jobs, err)
	}
	checkBouncer(t, b)
}

// submitThrough opens kern on pooled in schema and submits and waits for
// one run, with a worker: the first error on the way.
func submitThrough(t *testing.T, ctx context.Context, pooled, schema string, model agent.Model) error {
	t.Helper()
	d, err := db.Open(ctx, kerntest.WithPoolSize(pooled, kerntest.TestPoolSize), db.WithSchema(schema))
	if err != nil {
		return err
	}
	defer d.Close()
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	w, err := agent.NewWorker(d, agent.WorkerConfig{}, a)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}()
	if _, err := a.Run(ctx, "hello", agent.Background(true), agent.WithRunID("wrong-path")); err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := a.WaitRun(waitCtx, "wrong-path")
	if err != nil {
		return err
	}
	if out.Status != run.StatusCompleted {
		return fmt.Errorf("run ended %s: %s", out.Status, out.Error)
	}
	return nil
}
