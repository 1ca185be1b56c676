package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startLocal starts a private cluster for t, skipping t when this machine
// has no Postgres server binaries.
func startLocal(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := StartLocal(ctx)
	if errors.Is(err, ErrNoLocalPostgres) {
		t.Skipf("needs a local PostgreSQL server install (initdb, pg_ctl); "+
			"Debian/Ubuntu: apt-get install postgresql, macOS: brew install postgresql@16: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	if srv.Kind != KindInitdb {
		t.Fatalf("StartLocal gave a %s server", srv.Kind)
	}
	return srv
}

func TestRestart(t *testing.T) {
	t.Parallel()
	srv := startLocal(t)
	ctx := t.Context()

	old, err := pgx.Connect(ctx, srv.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(context.Background())
	if _, err := old.Exec(ctx, "CREATE TABLE survives (v text); INSERT INTO survives VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	oldPID := postmasterPID(t, srv)

	// A client in the middle of a query must be cut off too.
	busy, err := pgx.Connect(ctx, srv.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close(context.Background())
	busyPID := busy.PgConn().PID()
	busyErr := make(chan error, 1)
	go func() {
		qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := busy.Exec(qctx, "SELECT pg_sleep(15)")
		busyErr <- err
	}()
	// Restart only once the server is running the query; otherwise the
	// test could pass by cutting off a client that was merely idle.
	waitFor(t, 10*time.Second, "the in-flight query to start on the server", func() (bool, error) {
		var running bool
		err := old.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%')`, busyPID).Scan(&running)
		return running, err
	})

	const down = 500 * time.Millisecond
	start := time.Now()
	if err := srv.Restart(ctx, down); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Restart(%v) took %v (%v beyond the downtime)", down, took.Round(time.Millisecond), (took - down).Round(time.Millisecond))
	if took < down {
		t.Errorf("Restart returned after %v, before the %v downtime", took, down)
	}
	if pid := postmasterPID(t, srv); pid == oldPID {
		t.Errorf("postmaster pid %d unchanged: the server was not restarted", pid)
	}

	select {
	case err := <-busyErr:
		if err == nil {
			t.Error("query running across the restart succeeded")
		} else {
			t.Logf("in-flight query: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("query running across the restart did not fail")
	}
	if _, err := old.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("connection opened before the restart still works")
	} else {
		t.Logf("old connection: %v", err)
	}

	// Same URL, so same port; the data dir kept the table.
	if got := query[string](t, srv.AdminURL, "SELECT string_agg(v, ',') FROM survives"); got != "before" {
		t.Errorf("after restart survives = %q, want %q", got, "before")
	}

	start = time.Now()
	if err := srv.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart(0) took %v", time.Since(start).Round(time.Millisecond))

	dir := srv.cluster.dir
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %s still there after Stop (stat: %v)", dir, err)
	}
	if conn, err := pgx.Connect(ctx, srv.AdminURL); err == nil {
		conn.Close(ctx)
		t.Error("server still accepts connections after Stop")
	}
	if err := srv.Restart(ctx, 0); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

// TestWatchdogAfterRestart checks that the watchdog neither kills the
// restarted postmaster nor loses track of it: when this process "dies" (its
// end of the pipe closes), the new postmaster is stopped and the dir removed.
func TestWatchdogAfterRestart(t *testing.T) {
	t.Parallel()
	srv := startLocal(t)
	c := srv.cluster
	if c.watchdog == nil {
		t.Skip("no watchdog: sh not found")
	}
	pipe, exited := c.watchdogPipe, c.watchdogExited
	ctx := t.Context()

	// Also covers a Restart whose context ends while the server is down: it
	// must bring the server back anyway. The context is cancelled once the
	// server is seen down, not after a fixed time, which might land while
	// the server is still stopping and so test something else.
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	restarted := make(chan error, 1)
	go func() { restarted <- srv.Restart(short, time.Minute) }()
	waitDown(t, srv, restarted)
	cancel()
	cancelled := time.Now()
	var err error
	select {
	case err = <-restarted:
	case <-time.After(time.Minute):
		t.Fatal("Restart did not return after its context was cancelled")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Restart with a context ending during the downtime: %v", err)
	}
	// The downtime is a minute: a Restart back in half of it did not
	// wait it out, however slow the machine.
	if took := time.Since(cancelled); took > 30*time.Second {
		t.Errorf("Restart waited %v despite its context ending", took)
	}
	query[int](t, srv.AdminURL, "SELECT 1")

	// Rather than waiting a while to see whether a wrongly fired watchdog
	// acts, check that it cannot have fired: it acts only once read sees EOF
	// on its stdin, which cannot happen while our write end is open, and it
	// is still running.
	if _, err := pipe.Stat(); err != nil {
		t.Fatalf("watchdog pipe closed by Restart, so the watchdog fired: %v", err)
	}
	select {
	case <-exited:
		t.Fatal("watchdog exited during Restart")
	default:
	}

	// What the kernel does to the pipe when this process dies.
	if err := pipe.Close(); err != nil {
		t.Fatal(err)
	}
	// The watchdog removes the dir as its last act, so its exit is the
	// moment to check; it gives the postmaster up to 10s to die first.
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("watchdog still running 30s after its pipe closed")
	}
	if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("watchdog did not remove %s (stat: %v)", c.dir, err)
	}
	if conn, err := pgx.Connect(ctx, srv.AdminURL); err == nil {
		conn.Close(ctx)
		t.Error("restarted server still accepts connections after the watchdog ran")
	}
}

// TestStopDuringRestart: Stop must not wait out the downtime, and the
// interrupted Restart must not bring the deleted cluster back.
func TestStopDuringRestart(t *testing.T) {
	t.Parallel()
	srv := startLocal(t)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- srv.Restart(ctx, time.Minute) }()
	waitDown(t, srv, done)
	start := time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// A minute's downtime: a Stop within half of it did not wait it out.
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Stop during Restart took %v", took)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second): // short of the minute's downtime
		t.Fatal("Restart did not return soon after Stop")
	}
	if err == nil {
		t.Error("Restart interrupted by Stop succeeded")
	} else {
		t.Logf("interrupted Restart: %v", err)
	}
	if _, err := os.Stat(srv.cluster.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir still there (stat: %v)", err)
	}
}

// waitDown returns once the Restart running on another goroutine (which
// reports to restarted) has stopped the postmaster and is in its downtime.
// postmaster.pid goes when the postmaster exits, but pg_ctl notices only on
// its next 100ms poll, and until then halt is still running and holding
// c.mu; taking c.mu once waits that out, so the caller acts in the downtime
// and not in halt. A Restart that returns first fails t with its error.
func waitDown(t *testing.T, srv *Server, restarted <-chan error) {
	t.Helper()
	pidfile := filepath.Join(srv.cluster.data, "postmaster.pid")
	waitFor(t, time.Minute, "Restart to stop the postmaster", func() (bool, error) {
		select {
		case err := <-restarted:
			t.Fatalf("Restart returned before the server was seen down: %v", err)
		default:
		}
		_, err := os.Stat(pidfile)
		if errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return false, err
	})
	srv.cluster.mu.Lock()
	//lint:ignore SA2001 the empty critical section is the point: it waits for halt to let go
	srv.cluster.mu.Unlock()
}

func TestRestartOtherKinds(t *testing.T) {
	for _, kind := range []string{KindEnv, KindTestcontainers} {
		err := (&Server{Kind: kind}).Restart(context.Background(), 0)
		if !errors.Is(err, ErrCannotRestart) {
			t.Errorf("Restart on a %s server: %v, want ErrCannotRestart", kind, err)
		}
	}
}

func postmasterPID(t *testing.T, srv *Server) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.cluster.data, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

func TestStartLocalWithoutBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := binGlobs
	binGlobs = nil
	t.Cleanup(func() { binGlobs = saved })
	srv, err := StartLocal(context.Background())
	if !errors.Is(err, ErrNoLocalPostgres) {
		if srv != nil {
			_ = srv.Stop(context.Background())
		}
		t.Fatalf("StartLocal without binaries: %v, want ErrNoLocalPostgres", err)
	}
	t.Log(err)
}
