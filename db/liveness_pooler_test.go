package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// openThrough opens url (through a pooler) with opts, closed at the end.
func openThrough(t *testing.T, url string, opts ...db.Option) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), kerntest.WithPoolSize(url, 4), opts...)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(d.Close)
	return d
}

// claimFor registers worker, opens its session and has it claim a new run id.
func claimFor(t *testing.T, ctx context.Context, d *db.DB, worker, id string) engine.Session {
	t.Helper()
	store := d.Engine(engine.Key{})
	if err := store.RegisterWorker(ctx, worker, []string{"a"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenSession(ctx, worker)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ForWorker(worker).StartRun(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// Behind a session pooler a worker's backend outlives the worker: PgBouncer
// keeps it, reset, for its next client. The worker's death is still seen
// at once — its liveness lock went with the reset — and the rescue says
// which rule fired. (Judged by its backend, it would have waited for the
// heartbeat: an hour here.)
func TestDeadWorkerBehindASessionPoolerIsSeen(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := kerntest.DatabaseURL(t)
	b := pgtest.NewBouncer(t, url, pgtest.BouncerConfig{Mode: pgtest.PoolSession})
	d := openThrough(t, b.URL())
	if d.PoolMode() != db.PoolModeSession {
		t.Fatalf("through a session pooler: pool mode %q", d.PoolMode())
	}
	store := d.Engine(engine.Key{})
	alive := claimFor(t, ctx, d, "alive", "r-alive")
	defer alive.Close(ctx)
	dying := claimFor(t, ctx, d, "dying", "r-dying")
	var pid int32
	if err := d.Pool().QueryRow(ctx, "SELECT session_pid FROM kern_worker WHERE id = 'dying'").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("dead session runs with every session open: %v, %v", dead, err)
	}
	if err := dying.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitDeadSession(t, ctx, store, 15*time.Second, "the dead worker's session never counted as dead behind the session pooler")
	// The worker's backend is still there: the pooler kept it.
	var backends int
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&backends); err != nil {
		t.Fatal(err)
	}
	if backends != 1 {
		t.Logf("the dead worker's backend %d is gone (%d): PgBouncer closed it", pid, backends)
	}
	res, err := store.RescueStale(ctx, time.Hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requeued) != 1 || res.Requeued[0] != "r-dying" {
		t.Fatalf("rescued %+v, want r-dying only", res)
	}
	out, err := d.GetRun(ctx, "r-dying")
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != run.StatusPending || !strings.Contains(out.Error, "its Postgres session ended") {
		t.Fatalf("r-dying after the rescue: %s, error %q; want pending, naming the session rule", out.Status, out.Error)
	}
	if out, err := d.GetRun(ctx, "r-alive"); err != nil || out.Status != run.StatusRunning {
		t.Fatalf("r-alive: %v, %v; want running", out.Status, err)
	}
}

// A run rescued by its stale heartbeat says so, not that a session ended.
func TestRescueByHeartbeatSaysSo(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	d := kerntest.DB(t)
	s := claimFor(t, ctx, d, "w", "r1")
	defer s.Close(ctx)
	if _, err := d.Pool().Exec(ctx, "UPDATE kern_run SET heartbeat_at = now() - interval '1 minute' WHERE id = 'r1'"); err != nil {
		t.Fatal(err)
	}
	res, err := d.Engine(engine.Key{}).RescueStale(ctx, 30*time.Second, 3)
	if err != nil || len(res.Requeued) != 1 {
		t.Fatalf("rescue: %+v, %v", res, err)
	}
	out, err := d.GetRun(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Error, "no heartbeat for 30s") {
		t.Fatalf("rescued run's error %q; want the heartbeat rule", out.Error)
	}
}

// Behind a transaction pooler a connection is no session of its own: a
// worker records none without a direct URL (its heartbeats judge it), and
// refuses one the pool mode claims is a session; with a direct URL it
// records its session there.
func TestWorkerSessionBehindATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := kerntest.DatabaseURL(t)
	b := pgtest.NewBouncer(t, url, pgtest.BouncerConfig{Mode: pgtest.PoolTransaction, DefaultPoolSize: 4})
	recorded := func(d *db.DB, worker string) bool {
		t.Helper()
		var pid *int32
		if err := d.Pool().QueryRow(ctx, "SELECT session_pid FROM kern_worker WHERE id = $1", worker).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid != nil
	}

	plain := openThrough(t, b.URL())
	if plain.PoolMode() != db.PoolModeTransaction || plain.ListensForNotifications() {
		t.Fatalf("through a transaction pooler: pool mode %q, listens %v", plain.PoolMode(), plain.ListensForNotifications())
	}
	if got := plain.Pool().Config().ConnConfig.DefaultQueryExecMode; got != pgx.QueryExecModeCacheDescribe {
		t.Fatalf("query exec mode behind a transaction pooler: %v; want cache_describe", got)
	}
	s := claimFor(t, ctx, plain, "heartbeats", "r-hb")
	if recorded(plain, "heartbeats") {
		t.Fatal("a worker behind a transaction pooler without a direct URL recorded a session")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if dead, err := plain.Engine(engine.Key{}).DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("a heartbeat-only worker counted as dead: %v, %v", dead, err)
	}

	forced := openThrough(t, b.URL(), db.WithPoolMode(db.PoolModeSession))
	store := forced.Engine(engine.Key{})
	if err := store.RegisterWorker(ctx, "forced", []string{"a"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if s, err := store.OpenSession(ctx, "forced"); err == nil || !strings.Contains(err.Error(), "direct URL") {
		if s != nil {
			_ = s.Close(ctx)
		}
		t.Fatalf("a session through a transaction pooler: %v; want a refusal naming the direct URL", err)
	}
	if recorded(forced, "forced") {
		t.Fatal("a transaction pooler's connection was recorded as a worker's session")
	}

	direct := openThrough(t, b.URL(), db.WithDirectURL(url))
	if !direct.ListensForNotifications() {
		t.Fatal("with a direct URL the DB does not listen")
	}
	s = claimFor(t, ctx, direct, "direct", "r-direct")
	defer s.Close(ctx)
	if !recorded(direct, "direct") {
		t.Fatal("with a direct URL the worker recorded no session")
	}
}

// Pool modes: found by Open, or given; bad options are refused before
// anything is written; an application's pool that prepares named
// statements is refused behind a transaction pooler.
func TestPoolModes(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := kerntest.DatabaseURL(t)
	if d := openThrough(t, url); d.PoolMode() != db.PoolModeSession || d.HasDirectURL() {
		t.Fatalf("Postgres itself: pool mode %q, direct %v", d.PoolMode(), d.HasDirectURL())
	}
	if d := openThrough(t, url, db.WithPoolMode(db.PoolModeTransaction)); d.PoolMode() != db.PoolModeTransaction {
		t.Fatalf("WithPoolMode(transaction): %q", d.PoolMode())
	}
	for name, opt := range map[string]db.Option{
		"bad mode":         db.WithPoolMode("statement"),
		"empty direct URL": db.WithDirectURL(" "),
		"bad direct URL":   db.WithDirectURL("postgres://host:notaport/x"),
	} {
		if _, err := db.Open(ctx, url, opt); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("%s: %v; want run.ErrInvalidArgument", name, err)
		}
	}
	if m, err := db.ParsePoolMode(""); err != nil || m != db.PoolModeDetect {
		t.Errorf(`ParsePoolMode(""): %q, %v`, m, err)
	}

	b := pgtest.NewBouncer(t, url, pgtest.BouncerConfig{Mode: pgtest.PoolTransaction, DefaultPoolSize: 2})
	pool, err := pgxpool.New(ctx, b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := db.New(pool); !errors.Is(err, run.ErrInvalidArgument) || !strings.Contains(err.Error(), "cache_describe") {
		t.Fatalf("New with a transaction pooler's pool that prepares statements: %v; want run.ErrInvalidArgument naming cache_describe", err)
	}
	cfg, err := pgxpool.ParseConfig(b.URL() + "&default_query_exec_mode=cache_describe")
	if err != nil {
		t.Fatal(err)
	}
	described, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer described.Close()
	d, err := db.New(described)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.PoolMode() != db.PoolModeTransaction {
		t.Fatalf("New through a transaction pooler: pool mode %q", d.PoolMode())
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "via-new", AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
}
