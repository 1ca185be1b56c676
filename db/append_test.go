package db_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A content write whose reply is lost after Postgres committed it is sent
// again by the worker; the second try must not append the text twice.
func TestAppendWithLostReplyIsWrittenOnce(t *testing.T) {
	t.Parallel()
	d, proxy := kerntest.ProxiedDB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := d.Engine(engine.Key{})
	claim := startedRun(t, ctx, d, "r")
	seq := claim.EventSeq + 1

	cut := proxy.CutAfterCommit("req_delta")
	err := e.AppendContent(ctx, claim.Fence, seq, "hello ")
	select {
	case <-cut:
	case <-ctx.Done():
		t.Fatal("the proxy never cut the append")
	}
	if err == nil {
		t.Fatal("the append whose reply was cut reported success")
	}
	// What the worker does with a write in doubt: the same text, same seq.
	if err := e.AppendContent(ctx, claim.Fence, seq, "hello "); err != nil {
		t.Fatalf("sending the write in doubt again: %v", err)
	}
	if err := e.AppendContent(ctx, claim.Fence, seq+1, "world"); err != nil {
		t.Fatal(err)
	}
	if err := e.FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "!"}); err != nil {
		t.Fatal(err)
	}
	out, err := d.GetRun(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if out.Content != "hello world!" {
		t.Fatalf("content %q, want %q", out.Content, "hello world!")
	}
	if got := deltas(t, d, "r"); got != out.Content {
		t.Fatalf("deltas add up to %q, content is %q", got, out.Content)
	}
}

// A chunk sent at a seq the run has moved past is not appended, and a late
// write of an execution that lost its run is refused.
func TestAppendIsFencedBySeqAndExecution(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := d.Engine(engine.Key{})
	claim := startedRun(t, ctx, d, "r")
	if err := e.AppendContent(ctx, claim.Fence, claim.EventSeq+1, "a"); err != nil {
		t.Fatal(err)
	}
	// Skipping a seq would break the event order: refused.
	if err := e.AppendContent(ctx, claim.Fence, claim.EventSeq+3, "c"); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("append past the next seq: %v, want run.ErrNotRunning", err)
	}
	stale := claim.Fence
	stale.Execution--
	if err := e.AppendContent(ctx, stale, claim.EventSeq+2, "zombie"); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("append of another execution: %v, want run.ErrNotRunning", err)
	}
	out, err := d.GetRun(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if out.Content != "a" {
		t.Fatalf("content %q, want %q", out.Content, "a")
	}
}

// A released run's next execution gets a fence the released one never had:
// a late write of the released worker is refused, and no two run.started
// events carry the same execution.
func TestReleasedExecutionIsFencedOut(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := d.Engine(engine.Key{})
	first := startedRun(t, ctx, d, "r")
	if err := e.ReleaseRun(ctx, first.Fence); err != nil {
		t.Fatal(err)
	}
	second, err := e.StartRun(ctx, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Run.Attempt != 1 {
		t.Fatalf("attempt after a hand-back: %d, want 1 (a hand-back uses no attempt)", second.Run.Attempt)
	}
	if err := e.Heartbeat(ctx, first.Fence); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("heartbeat of the released execution: %v, want run.ErrNotRunning", err)
	}
	if err := e.AppendContent(ctx, first.Fence, second.EventSeq+1, "zombie"); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("append of the released execution: %v, want run.ErrNotRunning", err)
	}
	if err := e.FinishRun(ctx, first.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "zombie"}); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("finish of the released execution: %v, want run.ErrNotRunning", err)
	}
	if err := e.FinishRun(ctx, second.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for ev, err := range d.Events(ctx, "r", 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != run.EventRunStarted {
			continue
		}
		var data struct{ Execution int }
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.Execution == 0 || seen[data.Execution] {
			t.Fatalf("run.started %s repeats or lacks its execution", ev.Data)
		}
		seen[data.Execution] = true
	}
	if out, _ := d.GetRun(ctx, "r"); out.Content != "ok" {
		t.Fatalf("content %q, want %q", out.Content, "ok")
	}
}

// deltas is the concatenation of the run's content.delta events.
func deltas(t *testing.T, d *db.DB, runID string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	for ev, err := range d.Events(ctx, runID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventContentDelta {
			var data struct{ Delta string }
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatal(err)
			}
			s += data.Delta
		}
	}
	return s
}

// startedRun submits a foreground-style run and claims it.
func startedRun(t *testing.T, ctx context.Context, d *db.DB, id string) *engine.Claim {
	t.Helper()
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	claim, err := d.Engine(engine.Key{}).StartRun(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return claim
}
