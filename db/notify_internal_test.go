package db

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

func TestCoalesceIntervalRisesWithTheRate(t *testing.T) {
	t.Parallel()
	if got := coalesceInterval(0); got != 0 {
		t.Fatalf("idle queue: %v, want 0", got)
	}
	if got := coalesceInterval(coalesceFromRate); got != 0 {
		t.Fatalf("at %v runs/s: %v, want 0 (every commit notifies at once)", coalesceFromRate, got)
	}
	if got := coalesceInterval(coalesceFullRate * 10); got != coalesceMax {
		t.Fatalf("far above %v runs/s: %v, want %v", coalesceFullRate, got, coalesceMax)
	}
	prev := time.Duration(0)
	for rate := 0.0; rate <= coalesceFullRate*2; rate += 10 {
		got := coalesceInterval(rate)
		if got < prev || got > coalesceMax {
			t.Fatalf("at %v runs/s: %v after %v: not rising, or above %v", rate, got, prev, coalesceMax)
		}
		prev = got
	}
}

// drive feeds a notifier commits of one queue at the given times and sends
// what falls due in between; it returns when notifications went out.
func drive(n *insertNotifier, start time.Time, commits []time.Duration, runsEach int, until time.Duration) []time.Duration {
	var sent []time.Duration
	step := 100 * time.Microsecond
	next := 0
	for at := time.Duration(0); at <= until; at += step {
		now := start.Add(at)
		for next < len(commits) && commits[next] <= at {
			n.owe("q", runsEach, now)
			next++
		}
		if queues, _ := n.takeDueLocked(now); len(queues) > 0 {
			sent = append(sent, at)
		}
	}
	return sent
}

func TestNotifierSendsEachCommitAtOnceAtLowRates(t *testing.T) {
	t.Parallel()
	n := newInsertNotifier(nil, nil)
	// 100 runs/s, one per commit: the "100 runs/s" pickup figure.
	var commits []time.Duration
	for i := range 50 {
		commits = append(commits, time.Duration(i)*10*time.Millisecond)
	}
	sent := drive(n, time.Now(), commits, 1, time.Second)
	if !slices.Equal(sent, commits) {
		t.Fatalf("notifications at %v, want one at each commit %v", sent, commits)
	}
}

func TestNotifierCoalescesUnderLoadAndOwesEveryCommitOne(t *testing.T) {
	t.Parallel()
	n := newInsertNotifier(nil, nil)
	// 2,000 runs/s in commits of 4 every 2 ms.
	var commits []time.Duration
	for i := range 250 {
		commits = append(commits, time.Duration(i)*2*time.Millisecond)
	}
	last := commits[len(commits)-1]
	sent := drive(n, time.Now(), commits, 4, last+time.Second)
	if len(sent) > len(commits)/5 {
		t.Fatalf("%d notifications for %d commits at 2,000 runs/s: not coalesced", len(sent), len(commits))
	}
	// Every commit is followed by a notification within coalesceMax.
	for _, c := range commits {
		i, _ := slices.BinarySearch(sent, c)
		if i == len(sent) || sent[i]-c > coalesceMax {
			t.Fatalf("commit at %v: no notification within %v after it (sent %v)", c, coalesceMax, sent)
		}
	}
	for i := 1; i < len(sent); i++ {
		if gap := sent[i] - sent[i-1]; gap > coalesceMax+time.Millisecond {
			t.Fatalf("notifications %v apart under steady load (sent %v)", gap, sent)
		}
	}
}

// The notification is River's own: a LISTEN on River's insert channel
// hears it, with River's payload. (Only the notifier sends here: River's
// own notification of an hour's first submit is not involved.)
func TestNotifierSpeaksRiversInsertNotification(t *testing.T) {
	t.Parallel()
	d := migratedDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var channel string
	if err := conn.QueryRow(ctx, "SELECT current_schema() || '.river_insert'").Scan(&channel); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
		t.Fatal(err)
	}
	want := engine.QueueFor("Notified Agent")
	d.notifier.submitted(want, 1)
	n, err := conn.Conn().WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no insert notification: %v", err)
	}
	if n.Channel != channel || n.Payload != `{"queue" : "`+want+`"}` && n.Payload != `{"queue": "`+want+`"}` {
		t.Fatalf("notification %q on %q, want River's {\"queue\": %q} on %q", n.Payload, n.Channel, want, channel)
	}
	d.notifier.close() // as Close does
	if !isClosed(d.notifier.done) {
		t.Fatal("the notifier's loop outlived close")
	}
	d.notifier.submitted(want, 1) // after close: ignored, no loop started
	if !isClosed(d.notifier.done) {
		t.Fatal("a submit after close restarted the loop")
	}
}

// A batched submit hands its queue to the notifier after its commit; a
// run that starts later, or a foreground run, is owed nothing.
func TestBatchedSubmitOwesItsQueueANotification(t *testing.T) {
	t.Parallel()
	d := migratedDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent := func() int {
		d.notifier.mu.Lock()
		defer d.notifier.mu.Unlock()
		return d.notifier.sent
	}
	if _, err := d.SubmitRun(ctx, SubmitParams{RunID: "00000000-0000-4000-8000-00000000a002", AgentName: "a", Input: "later", Enqueue: true, StartAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubmitRun(ctx, SubmitParams{RunID: "00000000-0000-4000-8000-00000000a003", AgentName: "a", Input: "foreground"}); err != nil {
		t.Fatal(err)
	}
	if got := sent(); got != 0 {
		t.Fatalf("%d notifications for a scheduled and a foreground run, want 0", got)
	}
	if _, err := d.SubmitRun(ctx, SubmitParams{RunID: "00000000-0000-4000-8000-00000000a004", AgentName: "a", Input: "now", Enqueue: true}); err != nil {
		t.Fatal(err)
	}
	for sent() == 0 {
		if ctx.Err() != nil {
			t.Fatal("a background submit was owed no notification")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
