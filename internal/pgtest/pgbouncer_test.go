package pgtest

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// connectMode opens a connection to dbURL with the given default query exec
// mode, closed when t ends.
func connectMode(t *testing.T, dbURL string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(t.Context(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func scan[T any](t *testing.T, conn *pgx.Conn, sql string) T {
	t.Helper()
	var v T
	if err := conn.QueryRow(t.Context(), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// TestBouncerSession checks what kern's liveness relies on behind a
// session-mode pooler: a client keeps its server connection, and the
// session state it leaves (here an advisory lock) is reset before the next
// client gets that same server connection.
func TestBouncerSession(t *testing.T) {
	t.Parallel()
	b := NewBouncer(t, NewDatabase(t), BouncerConfig{Mode: PoolSession, DefaultPoolSize: 1})

	a := connectMode(t, b.URL(), pgx.QueryExecModeCacheStatement)
	pid := scan[int32](t, a, "SELECT pg_backend_pid()")
	if again := scan[int32](t, a, "SELECT pg_backend_pid()"); again != pid {
		t.Fatalf("session mode: backend pid changed within one client: %d then %d", pid, again)
	}
	if _, err := a.Exec(t.Context(), "SET application_name = 'kern_bouncer_test'"); err != nil {
		t.Fatal(err)
	}
	if got := scan[string](t, a, "SHOW application_name"); got != "kern_bouncer_test" {
		t.Fatalf("SET did not persist in session mode: application_name = %q", got)
	}
	if !scan[bool](t, a, "SELECT pg_try_advisory_lock(4242)") {
		t.Fatal("first client could not take the advisory lock")
	}
	if err := a.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	// One server connection in the pool: the next client must get the same
	// backend, so the lock can only be gone because PgBouncer reset it.
	// (Exec mode: with a reset that missed, the first client's cached
	// statements would fail this one before the lock is even looked at.)
	c := connectMode(t, b.URL(), pgx.QueryExecModeExec)
	if got := scan[int32](t, c, "SELECT pg_backend_pid()"); got != pid {
		t.Fatalf("second client got backend %d, want the pool's only one, %d", got, pid)
	}
	// Not pg_try_advisory_lock: on the backend that holds the lock it
	// succeeds anyway (session locks are re-entrant).
	if held := scan[bool](t, c, "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"); held {
		t.Fatal("advisory lock of a disconnected client still held: PgBouncer did not reset the server connection")
	}
	if got := scan[string](t, c, "SHOW application_name"); got == "kern_bouncer_test" {
		t.Fatal("SET of a disconnected client leaked to the next one")
	}
	if !b.Alive() {
		t.Fatal("pgbouncer died")
	}
}

// TestBouncerTransaction shows why kern cannot keep session state behind a
// transaction-mode pooler: two clients share one backend.
func TestBouncerTransaction(t *testing.T) {
	t.Parallel()
	b := NewBouncer(t, NewDatabase(t), BouncerConfig{Mode: PoolTransaction, DefaultPoolSize: 2})

	t.Run("clients share a backend", func(t *testing.T) {
		a := connectMode(t, b.URL(), pgx.QueryExecModeExec)
		c := connectMode(t, b.URL(), pgx.QueryExecModeExec)
		pa := scan[int32](t, a, "SELECT pg_backend_pid()")
		// PgBouncer reuses the most recently released server first (LIFO),
		// so the second client lands on the backend the first just used.
		if pc := scan[int32](t, c, "SELECT pg_backend_pid()"); pc != pa {
			t.Fatalf("two clients in transaction mode got backends %d and %d, want one shared", pa, pc)
		}
	})

	t.Run("statement cache breaks across clients", func(t *testing.T) {
		const sql = "SELECT 1 AS kern_bouncer_cache_probe"
		a := connectMode(t, b.URL(), pgx.QueryExecModeCacheStatement)
		_ = scan[int](t, a, sql)
		// pgx names cached statements after their SQL, so the second client
		// prepares a name the shared backend already has (42P05); or, had
		// it landed elsewhere between Parse and Bind, one it lacks (26000).
		c := connectMode(t, b.URL(), pgx.QueryExecModeCacheStatement)
		var one int
		err := c.QueryRow(t.Context(), sql).Scan(&one)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42P05" && pgErr.Code != "26000") {
			t.Fatalf("second client's cached statement: got %v, want SQLSTATE 42P05 or 26000", err)
		}
		t.Logf("pgx's statement cache behind transaction pooling: %v", err)

		// The unnamed statements of QueryExecModeExec are what works.
		e := connectMode(t, b.URL(), pgx.QueryExecModeExec)
		if got := scan[int](t, e, sql); got != 1 {
			t.Fatalf("QueryExecModeExec: got %d", got)
		}
	})
}

// TestBouncerServerLifetime checks that ServerLifetime reaches PgBouncer:
// a client's backend is replaced once it has lived that long.
func TestBouncerServerLifetime(t *testing.T) {
	t.Parallel()
	b := NewBouncer(t, NewDatabase(t), BouncerConfig{Mode: PoolTransaction, ServerLifetime: time.Second})
	conn := connectMode(t, b.URL(), pgx.QueryExecModeExec)
	first := scan[int32](t, conn, "SELECT pg_backend_pid()")
	deadline := time.Now().Add(15 * time.Second)
	for {
		pid := scan[int32](t, conn, "SELECT pg_backend_pid()")
		if pid != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d still in use 15s after a 1s server_lifetime", first)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !b.Alive() {
		t.Fatal("pgbouncer died")
	}
}

func TestBouncerStop(t *testing.T) {
	t.Parallel()
	dbURL := NewDatabase(t)
	b := NewBouncer(t, dbURL, BouncerConfig{})
	if !b.Alive() || b.PID() <= 0 {
		t.Fatalf("fresh pgbouncer: alive %v, pid %d", b.Alive(), b.PID())
	}
	// The URL names the same database and user, only through PgBouncer.
	want, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	conn := connectMode(t, b.URL(), pgx.QueryExecModeExec)
	if db := scan[string](t, conn, "SELECT current_database()"); db != want.Database {
		t.Fatalf("through pgbouncer: database %q, want %q", db, want.Database)
	}
	if user := scan[string](t, conn, "SELECT current_user"); user != want.User {
		t.Fatalf("through pgbouncer: user %q, want %q", user, want.User)
	}
	conn.Close(t.Context())

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if b.Alive() {
		t.Fatal("pgbouncer alive after Stop")
	}
	if err := b.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if !strings.Contains(b.Log(), "process up") {
		t.Fatalf("Log after Stop lacks PgBouncer's start-up line:\n%s", b.Log())
	}
	if _, err := pgx.Connect(t.Context(), b.URL()); err == nil {
		t.Fatal("connected through a stopped pgbouncer")
	}
}

func TestBouncerURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ target, want string }{
		{"postgres://u:p@db.example:5432/kern_test_1?sslmode=require&search_path=s", "postgres://u:p@127.0.0.1:6000/kern_test_1?search_path=s&sslmode=disable"},
		{"postgresql://u@/d?host=/run/pg&port=5433", "postgresql://u@127.0.0.1:6000/d?sslmode=disable"},
		{"host=/run/pg port=5433 dbname=d user=u", "dbname=d user=u host='127.0.0.1' port='6000' sslmode='disable'"},
	} {
		got, err := bouncerURL(tc.target, 6000)
		if err != nil || got != tc.want {
			t.Errorf("bouncerURL(%q) = %q, %v; want %q", tc.target, got, err, tc.want)
		}
	}
}

func TestBouncerConfigRejected(t *testing.T) {
	t.Parallel()
	for _, cfg := range []BouncerConfig{
		{Mode: "sessions"},
		{ServerLifetime: -time.Second},
		{DefaultPoolSize: -1},
		{ResetQuery: "DISCARD ALL;\nlisten_port = 1"},
	} {
		if err := cfg.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", cfg)
		}
	}
	if got := iniSeconds(time.Nanosecond); got != "0.001" {
		t.Errorf("iniSeconds(1ns) = %q, want 0.001", got)
	}
	if got := iniSeconds(1500 * time.Millisecond); got != "1.5" {
		t.Errorf("iniSeconds(1.5s) = %q, want 1.5", got)
	}
}

// TestBouncerWatchdog checks that a Bouncer whose owner dies (here: whose
// watchdog pipe closes, as the kernel does when the process dies) is
// killed and its directory removed.
func TestBouncerWatchdog(t *testing.T) {
	t.Parallel()
	b := NewBouncer(t, NewDatabase(t), BouncerConfig{})
	if b.watchdog == nil {
		t.Skip("no watchdog: sh not found")
	}
	if err := b.watchdogPipe.Close(); err != nil {
		t.Fatal(err)
	}
	// The watchdog removes the dir as its last act, so its exit is the
	// moment to look.
	select {
	case <-b.watchdogExited:
	case <-time.After(30 * time.Second):
		t.Fatal("watchdog still running 30s after its pipe closed")
	}
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("pgbouncer still running 30s after its watchdog fired")
	}
	if _, err := os.Stat(b.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("watchdog did not remove %s (stat: %v)", b.dir, err)
	}
	if b.Alive() {
		t.Error("Alive after the watchdog killed pgbouncer")
	}
}

// TestBouncerPortTaken checks the early-exit path: PgBouncer that cannot
// bind its port exits, and the error says so (which StartBouncer takes as
// the cue to try another port) and carries its log.
func TestBouncerPortTaken(t *testing.T) {
	t.Parallel()
	bin, err := findPgBouncer()
	if err != nil {
		t.Skip(err)
	}
	target := NewDatabase(t)
	tc, err := pgx.ParseConfig(target)
	if err != nil {
		t.Fatal(err)
	}
	as, err := unprivilegedAccount()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := bouncerDir(as, tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	b, err := startBouncerOnce(t.Context(), bin, as, dir, target, tc, BouncerConfig{}, port)
	if err == nil {
		b.Stop()
		t.Fatal("pgbouncer started on a port that was taken")
	}
	if !errors.Is(err, errPortTaken) || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("got %v, want errPortTaken with pgbouncer's log", err)
	}
}

// A target URL with pgxpool's own parameters (as kerntest's carry) starts
// a PgBouncer all the same: they are not startup parameters.
func TestBouncerTargetWithPoolParameters(t *testing.T) {
	t.Parallel()
	target := NewDatabase(t)
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	b := NewBouncer(t, target+sep+"pool_max_conns=3", BouncerConfig{Mode: PoolTransaction})
	if !b.Alive() {
		t.Fatal("PgBouncer is not running")
	}
}
