package db_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A notification can be lost (sent while the listener reconnects). The
// once-a-second re-check must still wake the subscriber.
func TestListenerRecheckCoversLostNotifications(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "quiet")
	if _, err := d.StartRun(ctx, "quiet", nil); err != nil {
		t.Fatal(err)
	}
	// Silence both triggers: from here on nothing is notified.
	if _, err := d.Pool().Exec(ctx, `ALTER TABLE kern_run_event DISABLE TRIGGER kern_run_events_inserted;
		ALTER TABLE kern_run_cancel DISABLE TRIGGER kern_run_cancel_requested`); err != nil {
		t.Fatal(err)
	}
	cancelSub := d.SubscribeCancel("quiet")
	defer cancelSub.Close()
	doneSub := d.SubscribeDone("quiet")
	defer doneSub.Close()

	if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_run_cancel (run_id) VALUES ('quiet')`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelSub.C():
	case <-time.After(5 * time.Second):
		t.Fatal("a cancel request without a notification was not picked up by the re-check")
	}
	if err := d.FinishRun(ctx, "quiet", 1, db.Finish{Status: run.StatusCancelled}); err != nil {
		t.Fatal(err)
	}
	out, err := d.WaitRun(ctx, "quiet")
	if err != nil || out.Status != run.StatusCancelled {
		t.Fatalf("WaitRun without notifications: %+v, %v", out, err)
	}
}

// The listener's connection can be killed (a Postgres restart, a proxy); it
// must reconnect and waiters must still finish.
func TestWaitersSurviveListenerConnectionKill(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "survivor")
	if _, err := d.StartRun(ctx, "survivor", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan *run.Output, 1)
	go func() {
		out, _ := d.WaitRun(ctx, "survivor")
		done <- out
	}()

	killListener(t, ctx, d)
	if err := d.FinishRun(ctx, "survivor", 1, db.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
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
