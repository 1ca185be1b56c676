package db_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A thousand concurrent WaitRun callers share the DB's one listener
// connection; they do not hold a connection each. The connections are
// counted once every waiter has subscribed, read its run and gone to sleep.
func TestThousandWaitersShareOneListener(t *testing.T) {
	t.Parallel()
	const waiters = 1000
	d := kerntest.DB(t)
	hooks := db.WakeHooksOf(d)
	ctx := kerntest.Context(t, 2*time.Minute)
	if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_run (id, agent_name, input, status, attempt)
		SELECT 'w' || i, 'a', 'x', 'running', 1 FROM generate_series(1, $1) i`, waiters); err != nil {
		t.Fatal(err)
	}

	// The waiters' context ends when the test does, so none outlives it.
	waitCtx, stopWaiters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var woke atomic.Int64
	for i := 1; i <= waiters; i++ {
		wg.Go(func() {
			out, err := d.WaitRun(waitCtx, fmt.Sprintf("w%d", i))
			if err != nil || out.Status != run.StatusCompleted {
				if waitCtx.Err() == nil {
					t.Errorf("waiter %d: %+v, %v", i, out, err)
				}
				return
			}
			woke.Add(1)
		})
	}
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	defer func() { stopWaiters(); <-returned }()

	// Every waiter has subscribed, read its run and is asleep.
	deadline := time.Now().Add(time.Minute)
	for hooks.SleepingWaiters() < waiters {
		if time.Now().After(deadline) {
			t.Fatalf("waiters did not settle: %d subscribed, %d asleep", hooks.DoneSubscriptions(), hooks.SleepingWaiters())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := hooks.DoneSubscriptions(); n != waiters {
		t.Fatalf("%d subscriptions for %d waiters", n, waiters)
	}
	if n := woke.Load(); n != 0 {
		t.Fatalf("%d waiters returned before their runs finished", n)
	}
	var listeners, total int
	err := d.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE application_name = $1), count(*)
		FROM pg_stat_activity WHERE datname = current_database()`, db.ListenerApplicationName).Scan(&listeners, &total)
	if err != nil {
		t.Fatal(err)
	}
	if listeners != 1 || total > int(d.Pool().Config().MaxConns)+1 {
		t.Fatalf("%d sleeping waiters hold %d connections (%d listeners); want 1 listener and at most the pool's %d besides",
			waiters, total, listeners, d.Pool().Config().MaxConns)
	}

	// Finish all of them in one statement, as FinishRun does one: status and
	// terminal event together.
	if _, err := d.Pool().Exec(ctx, `WITH f AS (
			UPDATE kern_run SET status = 'completed', event_seq = event_seq + 1 WHERE id LIKE 'w%' RETURNING id, event_seq)
		INSERT INTO kern_run_event (run_id, seq, type) SELECT id, event_seq, 'run.completed' FROM f`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatalf("%d of %d waiters returned after their runs finished", woke.Load(), waiters)
	}
	if n := woke.Load(); n != waiters {
		t.Fatalf("%d of %d waiters woke", n, waiters)
	}
	t.Logf("%d waiters: %d connections to the database, %d of them listeners", waiters, total, listeners)
}

// An events follower survives its listener connection being killed.
func TestFollowerSurvivesListenerKill(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "f")
	if _, err := ex(d).StartRun(ctx, "f", nil); err != nil {
		t.Fatal(err)
	}
	got := make(chan []run.Event, 1)
	go func() {
		var events []run.Event
		for ev, err := range d.Events(ctx, "f", 0) {
			if err != nil {
				break
			}
			events = append(events, ev)
		}
		got <- events
	}()
	killListener(t, ctx, d)
	if err := ex(d).AppendContent(ctx, "f", 1, "hello "); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "f", 1, engine.Finish{Status: run.StatusCompleted, Tail: "world"}); err != nil {
		t.Fatal(err)
	}
	select {
	case events := <-got:
		if len(events) != 4 || events[3].Type != run.EventRunCompleted {
			t.Fatalf("follower after a listener kill saw %+v", events)
		}
	case <-ctx.Done():
		t.Fatal("the follower never finished after its listener was killed")
	}
}

// killListener waits for the DB's listener connection and terminates it.
func killListener(t *testing.T, ctx context.Context, d *db.DB) {
	t.Helper()
	for {
		var killed bool
		err := d.Pool().QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, db.ListenerApplicationName).Scan(&killed)
		if err != nil {
			t.Fatal(err)
		}
		if killed {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("the listener never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
