package agent_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// ownServer starts a Postgres server of the test's own, which it may
// restart, with a migrated database whose pool holds poolSize connections.
// The test is skipped only where no local Postgres binaries exist to start
// one.
func ownServer(t *testing.T, ctx context.Context, name string, poolSize int) (*pgtest.Server, *db.DB) {
	t.Helper()
	srv, err := pgtest.StartLocal(ctx)
	if errors.Is(err, pgtest.ErrNoLocalPostgres) {
		t.Skipf("cannot control a Postgres server here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	url, err := srv.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	d := kerntest.Open(t, kerntest.WithPoolSize(url, poolSize))
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return srv, d
}

// With 200 runs streaming, Postgres goes down for two seconds and comes
// back. Workers and listeners must reconnect, no run may be lost or end
// with a wrong status: every run completes with its whole answer.
func TestPostgresRestartWithRunsInFlight(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restarts a Postgres server; skipped in -short")
	}
	ctx := kerntest.Context(t, 3*time.Minute)
	srv, d := ownServer(t, ctx, "kern_outage", 40) // its own server: room for 200 streaming runs

	const runs = 200
	answer := fakellm.LoremWords(150)
	fake, model := kerntest.Model(t)
	fake.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: answer, Drip: 20 * time.Millisecond} // ~3 s of streaming
	})
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{MaxConcurrentRuns: runs, FlushInterval: 50 * time.Millisecond}, a)

	ids := make([]string, runs)
	for i := range ids {
		out, err := a.Run(ctx, "go", agent.Background(true), agent.WithRunID(fmt.Sprintf("outage-%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	waiters := make(chan *run.Output, runs)
	for _, id := range ids {
		go func() {
			out, err := d.WaitRun(ctx, id)
			if err != nil {
				t.Errorf("wait %s: %v", id, err)
			}
			waiters <- out
		}()
	}
	if err := fake.WaitRequests(ctx, runs); err != nil {
		t.Fatalf("not all runs reached the model: %v", err)
	}

	if err := srv.Restart(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	for range runs {
		if out := <-waiters; out == nil {
			t.Fatal("a waiter gave up")
		}
	}
	for _, id := range ids {
		out, err := d.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != run.StatusCompleted || out.Content != answer {
			t.Errorf("%s after the restart: %s %q (%d bytes)", id, out.Status, out.Error, len(out.Content))
		}
	}
}
