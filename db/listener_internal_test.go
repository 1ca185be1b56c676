package db

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

func migratedDB(t *testing.T) *DB {
	t.Helper()
	url := pgtest.NewMigratedDatabase(t, "kern", func(ctx context.Context, url string) error {
		d, err := Open(ctx, url)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Migrate(ctx)
	})
	d, err := Open(context.Background(), url+"&pool_max_conns=4")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// listeningNow lists the channels the listener's connection LISTENs on.
func (l *listener) listeningNow() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var chs []string
	for ch := range l.listening {
		chs = append(chs, ch)
	}
	slices.Sort(chs)
	return strings.Join(chs, ",")
}

// waitingNow says the listener is waiting for a notification.
func (l *listener) waitingNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.interrupt != nil
}

// A worker's listener, whose subscribers only watch for cancels, does not
// receive the event notifications of every run. A waiter that comes later
// gets its channel at once, not at the next re-check: here the re-check is
// an hour away, so only the interrupted wait can have added it.
func TestListenerListensOnlyOnTheChannelsSubscribersNeed(t *testing.T) {
	t.Parallel()
	d := migratedDB(t)
	d.listener.recheckEvery = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.SubmitRun(ctx, SubmitParams{RunID: "r", AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	claim, err := engineDB{DB: d}.StartRun(ctx, "r", nil)
	if err != nil {
		t.Fatal(err)
	}

	cancelSub := engineDB{DB: d}.SubscribeCancel("r")
	defer cancelSub.Close()
	waitFor(t, func() bool { return d.listener.listeningNow() == channelCancel })
	waitFor(t, d.listener.waitingNow) // for a notification, with the next re-check an hour away

	done := d.subscribeDone("r")
	defer done.Close()
	waitFor(t, func() bool { return d.listener.listeningNow() == channelCancel+","+channelEvent })
	if err := (engineDB{DB: d}).FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done.C():
	case <-time.After(10 * time.Second):
		t.Fatal("the finished run's notification did not wake its waiter")
	}
}

// Channels nobody needs any more are dropped at the next re-check.
func TestListenerDropsChannelsNobodyNeeds(t *testing.T) {
	t.Parallel()
	d := migratedDB(t)
	d.listener.recheckEvery = 20 * time.Millisecond
	sub := d.subscribeDone("r")
	waitFor(t, func() bool { return d.listener.listeningNow() == channelEvent })
	sub.Close()
	waitFor(t, func() bool { return d.listener.listeningNow() == "" })
}
