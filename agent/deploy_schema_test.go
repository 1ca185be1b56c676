package agent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// deployModel answers "answer: <prompt>", and hangs on a prompt "hang"
// (until the run is cancelled).
func deployModel(t *testing.T) (*fakellm.Server, agent.Model) {
	t.Helper()
	fake, model := kerntest.Model(t)
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		last := req.Messages[len(req.Messages)-1].Content
		if last == "hang" {
			return fakellm.Reply{Hang: true}
		}
		return fakellm.Reply{Content: "answer: " + last}
	})
	return fake, model
}

// mustAnswer runs prompt in the background as run id and waits for
// deployModel's answer to it.
func mustAnswer(t *testing.T, ctx context.Context, a *agent.Agent, id, prompt string) {
	t.Helper()
	if _, err := a.Run(ctx, prompt, agent.Background(true), agent.WithRunID(id)); err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, a, id); out.Status != run.StatusCompleted || out.Content != "answer: "+prompt {
		t.Fatalf("%s: %s %q %s", id, out.Status, out.Content, out.Error)
	}
}

// startHanging runs "hang" in the background as run id and returns once
// its model call is in flight (deployModel hangs on it).
func startHanging(t *testing.T, ctx context.Context, a *agent.Agent, fake *fakellm.Server, id string) {
	t.Helper()
	requests := fake.Count()
	if _, err := a.Run(ctx, "hang", agent.Background(true), agent.WithRunID(id)); err != nil {
		t.Fatal(err)
	}
	if err := fake.WaitRequests(ctx, requests+1); err != nil {
		t.Fatal(err)
	}
}

// cancelToEnd cancels run id, which must answer true, and waits for it to
// end cancelled.
func cancelToEnd(t *testing.T, ctx context.Context, a *agent.Agent, id string) {
	t.Helper()
	if ok, err := a.CancelRun(ctx, id); err != nil || !ok {
		t.Fatalf("cancel %s: %v, %v", id, ok, err)
	}
	if out := mustWait(t, a, id); out.Status != run.StatusCancelled {
		t.Fatalf("%s ended %s; want cancelled", id, out.Status)
	}
}

// openSchema opens url with kern's tables in schema, and migrates.
func openSchema(t *testing.T, ctx context.Context, dbURL, schema string) *db.DB {
	t.Helper()
	d, err := db.Open(ctx, kerntest.WithPoolSize(dbURL, kerntest.TestPoolSize), db.WithSchema(schema))
	if err != nil {
		t.Fatalf("open in schema %s: %v", schema, err)
	}
	t.Cleanup(d.Close)
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate schema %s: %v", schema, err)
	}
	return d
}

// listenConn is a connection of its own LISTENing on channels.
func listenConn(t *testing.T, ctx context.Context, dbURL string, channels ...string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	for _, ch := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// notificationsUntil reads conn's notifications until the sentinel one,
// which the test sends last: Postgres delivers notifications in commit
// order, so whatever came before the sentinel is all there was.
func notificationsUntil(t *testing.T, ctx context.Context, conn *pgx.Conn, sentinel string) []string {
	t.Helper()
	var got []string
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for the sentinel notification: %v (got %v)", err, got)
		}
		if n.Payload == sentinel {
			return got
		}
		got = append(got, n.Channel+" "+n.Payload)
	}
}

// Two kern installs in two schemas of one database: each has its own
// River and kern tables (nothing in public), its own worker, runs, jobs
// and notifications; the same run id in both is two runs.
func TestTwoSchemasInOneDatabase(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	dbURL := pgtest.NewDatabase(t)
	fake, model := deployModel(t)
	dA := openSchema(t, ctx, dbURL, "app_a")
	dB := openSchema(t, ctx, dbURL, "app_b")
	a := &agent.Agent{Name: "assistant", Model: model, DB: dA}
	b := &agent.Agent{Name: "assistant", Model: model, DB: dB}
	kerntest.Worker(t, dA, agent.WorkerConfig{}, a)
	kerntest.Worker(t, dB, agent.WorkerConfig{}, b)

	// Each schema has River's and kern's tables; public has nothing of either.
	admin, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, schema := range []string{"app_a", "app_b"} {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1
			AND tablename IN ('river_job', 'river_migration', 'kern_run', 'kern_run_event', 'kern_schema_version')`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 5 {
			t.Errorf("schema %s has %d of River's and kern's 5 main tables", schema, n)
		}
	}
	var inPublic []string
	rows, err := admin.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace
		UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL SELECT typname FROM pg_type WHERE typnamespace = 'public'::regnamespace`)
	if err != nil {
		t.Fatal(err)
	}
	if inPublic, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(inPublic) != 0 {
		t.Errorf("public holds %v; want nothing", inPublic)
	}

	// B hears its own channels only; A's raw listener checks that A's
	// notifications carry A's schema.
	listenA := listenConn(t, ctx, dbURL, "app_a.kern_cancel", "app_a.kern_event")
	listenB := listenConn(t, ctx, dbURL, "app_b.kern_cancel", "app_b.kern_event", "app_b.river_insert", "kern_cancel", "kern_event")

	// The same run id in both schemas: two runs.
	for _, c := range []struct {
		ag    *agent.Agent
		input string
	}{{a, "from a"}, {b, "from b"}} {
		if _, err := c.ag.Run(ctx, c.input, agent.Background(true), agent.WithRunID("r1")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		ag   *agent.Agent
		want string
	}{{a, "answer: from a"}, {b, "answer: from b"}} {
		out := mustWait(t, c.ag, "r1")
		if out.Status != run.StatusCompleted || out.Content != c.want {
			t.Errorf("r1: %s %q; want completed %q", out.Status, out.Content, c.want)
		}
		var types []string
		for ev, err := range c.ag.Events(ctx, "r1", 0) {
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, string(ev.Type))
		}
		if len(types) == 0 || types[len(types)-1] != "run.completed" {
			t.Errorf("r1's events: %v; want them to end with run.completed", types)
		}
	}

	// Drain B's listener of its own run's notifications before A acts alone.
	if _, err := admin.Exec(ctx, "SELECT pg_notify('app_b.kern_event', 'sentinel-1')"); err != nil {
		t.Fatal(err)
	}
	notificationsUntil(t, ctx, listenB, "sentinel-1")

	// A run only A has, cancelled while it runs.
	startHanging(t, ctx, a, fake, "c1")
	if _, err := b.GetRunOutput(ctx, "c1"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("B reads A's run c1: %v; want run.ErrNotFound", err)
	}
	cancelToEnd(t, ctx, a, "c1")
	if _, err := admin.Exec(ctx, "SELECT pg_notify('app_a.kern_event', 'sentinel-2'), pg_notify('app_b.kern_event', 'sentinel-2')"); err != nil {
		t.Fatal(err)
	}
	heardA := notificationsUntil(t, ctx, listenA, "sentinel-2")
	if !containsPrefix(heardA, "app_a.kern_cancel c1") {
		t.Errorf("A's own listener heard %v; want app_a.kern_cancel for c1", heardA)
	}
	if heardB := notificationsUntil(t, ctx, listenB, "sentinel-2"); len(heardB) != 0 {
		t.Errorf("B's channels heard A's run: %v", heardB)
	}

	// Runs and jobs: A has two, B one.
	for _, c := range []struct {
		d    *db.DB
		want int
	}{{dA, 2}, {dB, 1}} {
		res, err := c.d.ListRuns(ctx, run.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		var jobs int
		if err := c.d.Pool().QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'kern_run'").Scan(&jobs); err != nil {
			t.Fatal(err)
		}
		if len(res.Runs) != c.want || jobs != c.want {
			t.Errorf("schema %s: %d runs, %d run jobs; want %d", c.d.Schema(), len(res.Runs), jobs, c.want)
		}
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// kern on a managed Postgres: a role that is no superuser, may create
// neither databases nor roles nor anything in public, and owns only its
// schema, migrates, runs a worker, runs and cancels runs, and its
// workers' liveness probe sees their sessions.
func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	adminURL := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	// Roles are the cluster's, not the database's: a name of this test's own.
	role := fmt.Sprintf("kern_app_%08x", rand.Uint32())
	for _, stmt := range []string{
		"CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
		"REVOKE CREATE ON SCHEMA public FROM PUBLIC",
		"REVOKE CREATE ON DATABASE " + pgx.Identifier{admin.Config().Database}.Sanitize() + " FROM PUBLIC",
		"CREATE SCHEMA kern AUTHORIZATION " + role,
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		// After the role's connections closed (cleanups run last-in first-out).
		ctx := context.Background()
		for _, stmt := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := admin.Exec(ctx, stmt); err != nil {
				t.Errorf("%s: %v", stmt, err)
			}
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role) // the test server trusts local connections
	// A schema the role has not got, and may not create: a clear error.
	other, err := db.Open(ctx, u.String(), db.WithSchema("other"))
	if err != nil {
		t.Fatal(err)
	}
	err = other.Migrate(ctx)
	other.Close()
	if err == nil || !strings.Contains(err.Error(), `schema "other" does not exist and the role may not create it`) {
		t.Fatalf("migrate into a schema the role may not create: %v", err)
	}
	fake, model := deployModel(t)
	d := openSchema(t, ctx, u.String(), "kern")
	var super bool
	if err := d.Pool().QueryRow(ctx, "SELECT usesuper FROM pg_user WHERE usename = current_user").Scan(&super); err != nil || super {
		t.Fatalf("connected as a superuser (%v, %v)", super, err)
	}
	if err := d.Migrate(ctx); err != nil { // again: nothing to do
		t.Fatalf("second migrate: %v", err)
	}

	store := d.Engine(engine.Key{})
	// Before any worker of ours runs (it would rescue the run itself): a
	// worker whose session ends is found dead by the probe, and its run is
	// rescued.
	if err := store.RegisterWorker(ctx, "dying", []string{"assistant"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenSession(ctx, "dying")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "r-dying", AgentName: "nobody", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ForWorker("dying").StartRun(ctx, "r-dying", nil); err != nil {
		t.Fatal(err)
	}
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("probe with the session open: dead=%v, %v", dead, err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		dead, err := store.DeadSessionRuns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if dead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe never found the closed session dead")
		}
		time.Sleep(10 * time.Millisecond) // the backend exits after the close returns
	}
	res, err := store.RescueStale(ctx, time.Hour, 3)
	if err != nil || len(res.Requeued) != 1 {
		t.Fatalf("rescue of the dead worker's run: %+v, %v", res, err)
	}

	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	mustAnswer(t, ctx, a, "r1", "hello")

	// A run the worker holds, hanging in the model: its worker's session
	// is alive, and the probe must see it so (the role reads its own
	// sessions' backend_start in pg_stat_activity).
	startHanging(t, ctx, a, fake, "c1")
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("probe with the worker alive: dead=%v, %v", dead, err)
	}
	var seen bool
	if err := d.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM kern_worker w JOIN pg_stat_activity a
		ON a.pid = w.session_pid AND a.backend_start = w.session_start)`).Scan(&seen); err != nil || !seen {
		t.Fatalf("the worker's session is not visible with its start time: %v, %v", seen, err)
	}
	cancelToEnd(t, ctx, a, "c1")

}
