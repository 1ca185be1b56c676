package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// records is a slog.Handler that keeps what is logged, for the test to read.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec.Clone())
	return nil
}

// find returns the first record at level with message msg.
func (r *records) find(level slog.Level, msg string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.got {
		if rec.Level == level && rec.Message == msg {
			return rec, true
		}
	}
	return slog.Record{}, false
}

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func retentionDB(t *testing.T) (*db.DB, string) {
	t.Helper()
	url := pgtest.NewMigratedDatabase(t, "kern", func(ctx context.Context, url string) error {
		d, err := db.Open(ctx, url)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Migrate(ctx)
	})
	d, err := db.Open(context.Background(), url) // connections open lazily: this test uses one or two
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, url
}

// The retention loop deletes runs that finished longer ago than its
// period, says so at Debug, and keeps recent and unfinished runs.
func TestRetentionDeletesOldFinishedRuns(t *testing.T) {
	t.Parallel()
	d, _ := retentionDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := d.Engine(engine.Key{})
	for _, id := range []string{"old-done", "recent-done", "old-pending", "old-running"} {
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"old-done", "recent-done", "old-running"} {
		claim, err := store.StartRun(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id == "old-running" {
			continue
		}
		if err := store.FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "y"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = now() - interval '3 hours';
		UPDATE kern_run SET finished_at = now() - interval '2 hours' WHERE id = 'old-done'`); err != nil {
		t.Fatal(err)
	}

	logs := &records{}
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		retain(loopCtx, d, time.Hour, 10*time.Millisecond, slog.New(logs))
	}()
	eventually(t, "the old finished run to be deleted", func() bool {
		_, err := d.GetRun(ctx, "old-done")
		return errors.Is(err, run.ErrNotFound)
	})
	eventually(t, "the deletion to be logged", func() bool {
		_, ok := logs.find(slog.LevelDebug, "kern: retention deleted finished runs")
		return ok
	})
	rec, _ := logs.find(slog.LevelDebug, "kern: retention deleted finished runs")
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "deleted" && a.Value.Int64() != 1 {
			t.Errorf("logged %v deleted, want 1", a.Value)
		}
		return true
	})
	for _, id := range []string{"recent-done", "old-pending", "old-running"} {
		if _, err := d.GetRun(ctx, id); err != nil {
			t.Errorf("%s: %v, want it kept", id, err)
		}
	}
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("retain did not return when its context ended")
	}
	if _, ok := logs.find(slog.LevelWarn, "kern: retention failed"); ok {
		t.Error("retention warned of a failure")
	}
}

// A retention pass that fails is logged at Warn, and the loop goes on.
func TestRetentionWarnsOfFailures(t *testing.T) {
	t.Parallel()
	_, url := retentionDB(t)
	closed, err := db.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	logs := &records{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		retain(ctx, closed, time.Hour, time.Millisecond, slog.New(logs))
	}()
	eventually(t, "two failures to be logged", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		n := 0
		for _, rec := range logs.got {
			if rec.Level == slog.LevelWarn && rec.Message == "kern: retention failed" {
				n++
			}
		}
		return n >= 2
	})
	stop()
	<-done
}
