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
	"github.com/kern-go/kern/run"
)

// A notification can be lost (sent while the listener reconnects, say):
// the periodic re-check must still wake the subscribers. Here the listener
// drops every notification it receives, so nothing but a re-check can wake
// anyone, and no channel is added after the subscriptions, so no re-check
// follows a new LISTEN: each wake-up must come from the periodic re-check,
// not before it is due.
func TestListenerRecheckCoversLostNotifications(t *testing.T) {
	t.Parallel()
	const every = 2 * time.Second
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	hooks := db.WakeHooksOf(d)
	hooks.SetRecheckEvery(every)
	hooks.DropNotifications(true)
	submit(t, d, "quiet")
	if _, err := ex(d).StartRun(ctx, "quiet", nil); err != nil {
		t.Fatal(err)
	}

	cancelSub := ex(d).SubscribeCancel("quiet")
	defer cancelSub.Close()
	type result struct {
		out *run.Output
		err error
	}
	waited := make(chan result, 1)
	go func() {
		out, err := d.WaitRun(ctx, "quiet")
		waited <- result{out, err}
	}()
	settled := func() bool {
		return hooks.Listening() == "kern_cancel,kern_event" && hooks.Waiting() && hooks.SleepingWaiters() == 1
	}
	pollUntil(t, 10*time.Second, "the listener and the waiter to settle", settled)

	// lost does what makes a notification, sees the listener drop it and
	// checks that nothing was woken, since the next re-check is not due yet.
	// It returns when that re-check is due.
	lost := func(what string, woken func() bool, act func()) time.Time {
		t.Helper()
		next, dropped := hooks.NextRecheck(), hooks.Dropped()
		act()
		pollUntil(t, 10*time.Second, what+"'s notification to reach the listener", func() bool { return hooks.Dropped() > dropped })
		if !time.Now().Before(next) {
			t.Fatalf("%s: too slow, the periodic re-check was due before the notification was dropped", what)
		}
		if woken() {
			t.Fatalf("%s: woken before the periodic re-check, with its notification lost", what)
		}
		return next
	}

	next := lost("a cancel request", func() bool { return len(cancelSub.C()) > 0 }, func() {
		if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_run_cancel (run_id) VALUES ('quiet')`); err != nil {
			t.Fatal(err)
		}
	})
	select {
	case <-cancelSub.C():
	case <-time.After(time.Until(next) + 5*time.Second):
		t.Fatalf("a cancel request whose notification was lost was not picked up by the periodic re-check (every %v)", every)
	}
	if time.Now().Before(next) {
		t.Fatal("the cancel watcher was woken before the periodic re-check was due")
	}

	// The re-check that found the cancel request has scheduled the next one.
	pollUntil(t, 10*time.Second, "the next re-check to be scheduled", func() bool { return hooks.NextRecheck().After(next) && settled() })
	next = lost("the run's end", func() bool { return len(waited) > 0 }, func() {
		if err := ex(d).FinishRun(ctx, "quiet", 1, engine.Finish{Status: run.StatusCancelled}); err != nil {
			t.Fatal(err)
		}
	})
	select {
	case r := <-waited:
		if r.err != nil || r.out.Status != run.StatusCancelled {
			t.Fatalf("WaitRun without notifications: %+v, %v", r.out, r.err)
		}
	case <-time.After(time.Until(next) + 5*time.Second):
		t.Fatalf("WaitRun, its run's notification lost, was not woken by the periodic re-check (every %v)", every)
	}
	if time.Now().Before(next) {
		t.Fatal("WaitRun was woken before the periodic re-check was due")
	}
}

// The listener's connection can be killed (a Postgres restart, a proxy); it
// must reconnect and waiters must still finish.
func TestWaitersSurviveListenerConnectionKill(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "survivor")
	if _, err := ex(d).StartRun(ctx, "survivor", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan *run.Output, 1)
	go func() {
		out, _ := d.WaitRun(ctx, "survivor")
		done <- out
	}()

	killListener(t, ctx, d)
	if err := ex(d).FinishRun(ctx, "survivor", 1, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-done:
		if out == nil || out.Status != run.StatusCompleted {
			t.Fatalf("waiter after listener kill: %+v", out)
		}
	case <-ctx.Done():
		t.Fatal("the waiter never woke after the listener connection was killed")
	}
	// And the listener is back.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
			db.ListenerApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener connections after the kill: %d, want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close of a DB made with New (the application's pool) ends kern's own
// listener connection and holds none of the pool's, which stays usable.
func TestCloseReleasesConnectionsOfAnApplicationPool(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, 30*time.Second)
	pool, err := pgxpool.New(ctx, kerntest.WithPoolSize(url, kerntest.TestPoolSize))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	d, err := db.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	submit(t, d, "c")
	if _, err := ex(d).StartRun(ctx, "c", nil); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { _, err := d.WaitRun(ctx, "c"); waited <- err }() // starts the listener
	listeners := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, db.ListenerApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitUntil(t, "the listener to connect", func() bool { return listeners() == 1 })
	if err := ex(d).FinishRun(ctx, "c", 1, engine.Finish{Status: run.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}

	d.Close()
	waitUntil(t, "the listener connection to end", func() bool { return listeners() == 0 })
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("%d of the application's connections still acquired after Close", n)
	}
	var one int
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("the application's pool after Close: %v", err)
	}
}

// waitUntil polls cond for up to 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Appending events notifies only while some listener is registered for
// them: with none, a fleet nobody follows sends no event notifications
// (each one would serialize the commits of the statements that send them).
// A raw LISTEN connection, which does not register, sees the second run's
// notification first: notifications arrive in commit order, so a
// notification for the first run would have come before it.
func TestEventsNotifyOnlyWhileAListenerIsRegistered(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	conn, err := pgx.ConnectConfig(ctx, d.Pool().Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN "public.kern_event"`); err != nil { // channels carry the schema
		t.Fatal(err)
	}
	finish := func(id string) {
		t.Helper()
		submit(t, d, id)
		if _, err := ex(d).StartRun(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		if err := ex(d).FinishRun(ctx, id, 1, engine.Finish{Status: run.StatusCompleted}); err != nil {
			t.Fatal(err)
		}
	}
	finish("unwatched")
	if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_event_listener (id, expires_at) VALUES ('test', now() + interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	finish("watched")
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(waitCtx)
	if err != nil {
		t.Fatalf("no notification for the run finished while a listener was registered: %v", err)
	}
	if !strings.HasPrefix(n.Payload, "watched") {
		t.Fatalf("first notification is %q: the run finished while no listener was registered notified", n.Payload)
	}
}

// A WaitRun registers its process's listener for event notifications, and
// closing the DB takes the registration back.
func TestListenerRegistersWhileSomeoneWaits(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	waiter, err := db.Open(ctx, d.Pool().Config().ConnString()) // another process on the same database
	if err != nil {
		t.Fatal(err)
	}
	registered := func() int {
		var n int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_event_listener WHERE expires_at > now()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := registered(); n != 0 {
		t.Fatalf("%d registrations before anyone waits", n)
	}
	submit(t, d, "r")
	waitCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := waiter.WaitRun(waitCtx, "r"); done <- err }()
	pollUntil(t, 10*time.Second, "the waiter's listener to register", func() bool { return registered() == 1 })
	cancel()
	<-done
	waiter.Close()
	if n := registered(); n != 0 {
		t.Fatalf("%d registrations left after the DB closed", n)
	}
}

// StoredEvents returns what the log holds now, after a seq, without
// waiting for more on a run that is still running.
func TestStoredEventsDoesNotWait(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 10*time.Second)
	submit(t, d, "stored")
	if _, err := ex(d).StartRun(ctx, "stored", nil); err != nil {
		t.Fatal(err)
	}
	for _, delta := range []string{"a", "b"} {
		if err := ex(d).AppendContent(ctx, "stored", 1, delta); err != nil {
			t.Fatal(err)
		}
	}
	all, err := d.StoredEvents(ctx, "stored", 0)
	if err != nil || len(all) != 3 || all[0].Type != run.EventRunStarted || all[2].Seq != 3 {
		t.Fatalf("StoredEvents = %+v, %v", all, err)
	}
	if later, err := d.StoredEvents(ctx, "stored", 2); err != nil || len(later) != 1 || later[0].Seq != 3 {
		t.Fatalf("after 2: %+v, %v", later, err)
	}
	if _, err := d.StoredEvents(ctx, "stored", -1); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("afterSeq -1: %v", err)
	}
}
