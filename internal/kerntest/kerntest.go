// Package kerntest wires kern's real parts together for tests: an isolated,
// migrated database on a real Postgres (internal/pgtest), the fake
// OpenAI-compatible model server (internal/fakellm) reached through the real
// go-openai client, and workers that are stopped when the test ends.
package kerntest

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/pgtest"
)

// migrate prepares a template database once per test process.
func migrate(ctx context.Context, url string) error {
	d, err := db.Open(ctx, url)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Migrate(ctx)
}

// DatabaseURL returns the URL of a fresh database with kern's schema.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	return pgtest.NewMigratedDatabase(t, "kern", migrate)
}

// DB opens a fresh, migrated database, closed when the test ends.
func DB(t testing.TB) *db.DB {
	t.Helper()
	return Open(t, DatabaseURL(t))
}

// Open opens url, closed when the test ends. Its pool is kept small
// (TestPoolSize): tests run in parallel, in several packages and worker
// processes at once, against one server whose max_connections may be 100.
func Open(t testing.TB, url string) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), WithPoolSize(url, TestPoolSize))
	if err != nil {
		t.Fatalf("open db: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// TestPoolSize is the pool size of a test's DB.
const TestPoolSize = 8

// WithPoolSize sets pgxpool's pool_max_conns on a URL or keyword/value DSN
// that does not set it already.
func WithPoolSize(url string, n int) string {
	switch {
	case strings.Contains(url, "pool_max_conns"):
		return url
	case strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://"):
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		return url + sep + "pool_max_conns=" + strconv.Itoa(n)
	default:
		return url + " pool_max_conns=" + strconv.Itoa(n)
	}
}

// Model starts a fake model server and returns it with a Model that talks
// to it over HTTP through go-openai.
func Model(t testing.TB) (*fakellm.Server, agent.Model) {
	t.Helper()
	srv, url := ModelServer(t)
	return srv, agent.OpenAIChat{Client: agent.NewOpenAIClient("test-key", url), ID: "fake-model"}
}

// ModelServer starts a fake model server and returns it with its base URL
// (".../v1"), for models in other processes.
func ModelServer(t testing.TB) (*fakellm.Server, string) {
	t.Helper()
	srv := fakellm.New()
	url, stop, err := srv.Start()
	if err != nil {
		t.Fatalf("start fake model: %v", err)
	}
	t.Cleanup(stop)
	return srv, url
}

// Worker starts a worker, stopped (gracefully, briefly) when the test ends.
func Worker(t testing.TB, d *db.DB, cfg agent.WorkerConfig, agents ...*agent.Agent) *agent.Worker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	w, err := agent.NewWorker(d, cfg, agents...)
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop worker: %v", err)
		}
	})
	return w
}

// quietLogger keeps River's start/stop chatter out of test output while
// still showing warnings and errors.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// Context is a test context with a deadline, so a hang fails instead of
// waiting for go test's global timeout.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ExampleDB is DB for runnable examples, which have no testing.TB: a fresh
// migrated database, and a func that closes and drops it.
func ExampleDB() (*db.DB, func()) {
	ctx := context.Background()
	srv, _, err := pgtest.Shared()
	if err != nil {
		panic(err) // an example cannot report errors otherwise
	}
	url, err := srv.CreateDatabase(ctx, "kern_example")
	if err != nil {
		panic(err)
	}
	d, err := db.Open(ctx, WithPoolSize(url, TestPoolSize))
	if err == nil {
		err = d.Migrate(ctx)
	}
	if err != nil {
		panic(err)
	}
	return d, func() { d.Close(); _ = srv.DropDatabase(ctx, url) }
}

// ExampleModel is Model for runnable examples.
func ExampleModel() (*fakellm.Server, agent.Model, func()) {
	srv := fakellm.New()
	url, stop, err := srv.Start()
	if err != nil {
		panic(err)
	}
	return srv, agent.OpenAIChat{Client: agent.NewOpenAIClient("example", url), ID: "fake-model"}, stop
}
