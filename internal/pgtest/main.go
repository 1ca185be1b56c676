package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

const (
	// startTimeout covers a first-time image pull on the container path.
	startTimeout = 5 * time.Minute
	// dbTimeout bounds creating or dropping one database, including waiting
	// for another test's template copy.
	dbTimeout = 2 * time.Minute
)

// shared is the one server per test process, started on first use.
var shared struct {
	mu     sync.Mutex
	tried  bool
	closed bool
	srv    *Server
	err    error
}

// Shared returns the process's server, starting it on first use. Tests use
// NewDatabase or NewMigratedDatabase; Shared is for code with no testing.TB,
// such as runnable examples.
func Shared() (srv *Server, startedNow bool, err error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.closed {
		return nil, false, errors.New("pgtest: used after Main stopped the shared server")
	}
	if !shared.tried {
		shared.tried, startedNow = true, true
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		shared.srv, shared.err = Start(ctx)
		cancel()
	}
	return shared.srv, startedNow, shared.err
}

// sharedServer is Shared for tests: it fails t with the same helpful error
// for every caller if the server could not be had.
func sharedServer(t testing.TB) *Server {
	t.Helper()
	srv, startedNow, err := Shared()
	if err != nil {
		t.Fatal(err)
	}
	if startedNow {
		t.Logf("pgtest: using %s Postgres server", srv.Kind)
	}
	return srv
}

// Main runs the tests, then stops the shared server if this process started
// one and drops this process's templates. Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil {
		// Cleanup trouble must not turn a green run red; the next run (or
		// the initdb watchdog) cleans up what is left.
		fmt.Fprintln(os.Stderr, "pgtest: cleanup:", err)
	}
	os.Exit(code)
}

func shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.closed = true
	srv := shared.srv
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var tmplErr error
	if srv.Kind == KindEnv {
		// Other servers vanish with everything on them.
		tmplErr = srv.dropTemplates(ctx)
	}
	if err := srv.Stop(ctx); err != nil {
		return err
	}
	return tmplErr
}

// NewDatabase creates a fresh, empty database on the shared server and
// returns its URL. It is dropped when t's cleanup runs. Safe for parallel
// tests.
func NewDatabase(t testing.TB) string {
	t.Helper()
	srv := sharedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	dbURL, err := srv.CreateDatabase(ctx, "kern_test")
	if err != nil {
		t.Fatal(err)
	}
	dropOnCleanup(t, srv, dbURL)
	return dbURL
}

// NewMigratedDatabase returns the URL of a fresh database copied from a
// template that migrate prepared once per process for key (e.g. "kern").
// migrate receives the template's URL and must leave no connection open to
// it. The database is dropped when t's cleanup runs.
func NewMigratedDatabase(t testing.TB, key string, migrate func(ctx context.Context, url string) error) string {
	t.Helper()
	srv := sharedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	dbURL, err := srv.migratedDatabase(ctx, "kern_test", key, migrate)
	if err != nil {
		t.Fatal(err)
	}
	dropOnCleanup(t, srv, dbURL)
	return dbURL
}

func dropOnCleanup(t testing.TB, srv *Server, dbURL string) {
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		defer cancel()
		if err := srv.DropDatabase(ctx, dbURL); err != nil {
			t.Error(err)
		}
	})
}
