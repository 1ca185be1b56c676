package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A worker's own Postgres session whose first connection hangs (a loaded
// machine, a lost packet: here the proxy holds it, never answered) is
// opened again, not fatal: Start returns once a later attempt succeeds,
// the session is recorded, and the worker works. Before, Start waited on
// the hung connection until its ctx ended and failed with "worker
// session: timeout: context deadline exceeded".
func TestWorkerStartRetriesAHungSessionConnection(t *testing.T) {
	t.Parallel()
	d, proxy := kerntest.ProxiedDB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	w, err := agent.NewWorker(d, agent.WorkerConfig{}, a)
	if err != nil {
		t.Fatal(err)
	}
	// The first attempt's deadline only bounds the hung connection; later
	// attempts double it, so a slow machine's healthy connection gets in.
	agent.SetSessionAttemptTimeout(w, 500*time.Millisecond)
	ctx := kerntest.Context(t, 60*time.Second)
	// The pool holds an idle connection (db.Open pinged), so the next new
	// connection is the worker's session.
	held := proxy.HoldNext()
	if err := w.Start(ctx); err != nil {
		t.Fatalf("start with the session's first connection hung: %v", err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	})
	select {
	case <-held:
	default:
		t.Fatal("no connection was held: the test did not hang the session's first connection")
	}
	var recorded bool
	if err := d.Pool().QueryRow(ctx, `SELECT session_pid IS NOT NULL FROM kern_worker`).Scan(&recorded); err != nil || !recorded {
		t.Fatalf("the worker's session is recorded: %v, %v; want true", recorded, err)
	}
	out, err := a.Run(ctx, "hello", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustWait(t, a, out.RunID); got.Status != run.StatusCompleted {
		t.Fatalf("run after the retried start: %s (%s)", got.Status, got.Error)
	}
}
