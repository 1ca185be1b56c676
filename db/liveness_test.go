package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A run claimed by a worker is rescued as soon as the worker's own session
// ends, long before its heartbeat is stale; while the session is open, or
// when it was recorded on an earlier server instance, it is not.
func TestRunOfAWorkerWhoseSessionEndedIsRescued(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	store := d.Engine(engine.Key{})
	const hour = time.Hour // RescueAfter: the heartbeat cannot be what rescues here

	start := func(worker, id string) engine.Session {
		t.Helper()
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
	alive := start("alive", "r-alive")
	defer alive.Close(ctx)
	dying := start("dying", "r-dying")
	old := start("old", "r-old")
	// "old" recorded its session on an earlier server instance (as after a
	// restart): its ended session says nothing.
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_worker SET session_server_start = session_server_start - interval '1 day' WHERE id = 'old'`); err != nil {
		t.Fatal(err)
	}

	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("dead session runs with every session open: %v, %v", dead, err)
	}
	if res, err := store.RescueStale(ctx, hour, 3); err != nil || len(res.Requeued)+len(res.Failed) != 0 {
		t.Fatalf("rescued with every session open: %+v, %v", res, err)
	}
	if err := dying.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitDeadSession(t, ctx, store, 10*time.Second, "the closed session never counted as dead")
	res, err := store.RescueStale(ctx, hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requeued) != 1 || res.Requeued[0] != "r-dying" {
		t.Fatalf("rescued %+v, want r-dying only", res)
	}
	for id, want := range map[string]run.Status{"r-alive": run.StatusRunning, "r-old": run.StatusRunning, "r-dying": run.StatusPending} {
		out, err := d.GetRun(ctx, id)
		if err != nil || out.Status != want {
			t.Errorf("%s: %v, %v; want %s", id, out.Status, err, want)
		}
	}
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("dead session runs after the rescue: %v, %v", dead, err)
	}
}

// waitDeadSession polls the liveness probe until it finds a dead worker's
// session (the backend, or the pooler's reset, frees it a moment after
// the client closed), failing with msg after within.
func waitDeadSession(t *testing.T, ctx context.Context, store engine.Store, within time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		dead, err := store.DeadSessionRuns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if dead {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
