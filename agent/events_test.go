package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func collect(t *testing.T, a *agent.Agent, runID string, after int64) []run.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []run.Event
	for ev, err := range a.Events(ctx, runID, after) {
		if err != nil {
			t.Fatalf("events of %s: %v", runID, err)
		}
		out = append(out, ev)
	}
	return out
}

func deltaText(t *testing.T, ev run.Event) string {
	t.Helper()
	var d struct {
		Delta string `json:"delta"`
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatalf("content.delta data %s: %v", ev.Data, err)
	}
	return d.Delta
}

// checkLog asserts the shape every run's log has: seqs 1..n without gaps,
// run.started first (unless cancelled before start), exactly one terminal
// event, last; and the deltas add up to the stored content.
func checkLog(t *testing.T, events []run.Event, final *run.Output) {
	t.Helper()
	if len(events) == 0 {
		t.Fatalf("%s: no events", final.RunID)
	}
	var content strings.Builder
	for i, ev := range events {
		if ev.Seq != int64(i+1) || ev.RunID != final.RunID {
			t.Fatalf("%s: event %d has seq %d (run %s); want gap-free from 1", final.RunID, i, ev.Seq, ev.RunID)
		}
		if ev.Type.Terminal() != (i == len(events)-1) {
			t.Fatalf("%s: terminal event %s at position %d of %d", final.RunID, ev.Type, i, len(events))
		}
		if ev.Type == run.EventContentDelta {
			content.WriteString(deltaText(t, ev))
		}
	}
	if want := run.EventType("run." + string(final.Status)); events[len(events)-1].Type != want {
		t.Fatalf("%s: last event %s, want %s", final.RunID, events[len(events)-1].Type, want)
	}
	if content.String() != final.Content {
		t.Fatalf("%s: deltas add up to %q, content is %q", final.RunID, content.String(), final.Content)
	}
}

func TestEventsGapFreeUnderConcurrentRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxConcurrentRuns: 25, FlushInterval: time.Millisecond, FlushBytes: 16})
	answer := fakellm.LoremWords(60)
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: answer, Drip: 200 * time.Microsecond}
	})
	ctx := kerntest.Context(t, time.Minute)

	const runs = 50
	ids := make([]string, runs)
	for i := range ids {
		out, err := e.agent.Run(ctx, "go", agent.Background(true), agent.WithRunID(fmt.Sprintf("ev-%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	// Follow every run live, all at once, while they run.
	var wg sync.WaitGroup
	logs := make([][]run.Event, runs)
	for i, id := range ids {
		wg.Go(func() { logs[i] = collect(t, e.agent, id, 0) })
	}
	wg.Wait()
	for i, id := range ids {
		final := mustWait(t, e.agent, id)
		if final.Status != run.StatusCompleted || final.Content != answer {
			t.Fatalf("%s: %s %q", id, final.Status, final.Error)
		}
		checkLog(t, logs[i], final)
		if len(logs[i]) < 4 {
			t.Fatalf("%s: %d events; the small flush size should give several deltas", id, len(logs[i]))
		}
		// A replay after the fact is the same log.
		if again := collect(t, e.agent, id, 0); len(again) != len(logs[i]) {
			t.Fatalf("%s: replay has %d events, live follow had %d", id, len(again), len(logs[i]))
		}
	}
}

func TestEventsResumeYieldsExactlyTheTail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{FlushInterval: time.Millisecond, FlushBytes: 8})
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(40), Drip: time.Millisecond}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "go", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	// Read half, drop the reader, resume from the last seq seen.
	var head []run.Event
	for ev, err := range e.agent.Events(ctx, out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		head = append(head, ev)
		if len(head) == 5 {
			break
		}
	}
	tail := collect(t, e.agent, out.RunID, head[len(head)-1].Seq)
	all := collect(t, e.agent, out.RunID, 0)
	if len(head)+len(tail) != len(all) {
		t.Fatalf("head %d + tail %d != all %d", len(head), len(tail), len(all))
	}
	for i, ev := range append(head, tail...) {
		if ev.Seq != all[i].Seq || ev.Type != all[i].Type || string(ev.Data) != string(all[i].Data) {
			t.Fatalf("event %d: resumed %+v, full log %+v", i, ev, all[i])
		}
	}
	checkLog(t, all, mustWait(t, e.agent, out.RunID))
	// Resuming after the terminal event ends at once.
	if rest := collect(t, e.agent, out.RunID, all[len(all)-1].Seq); len(rest) != 0 {
		t.Fatalf("events after the terminal one: %+v", rest)
	}
}

func TestFirstDeltaArrivesWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{FlushInterval: 10 * time.Millisecond})
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(200), Drip: 5 * time.Millisecond}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "go", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	for ev, err := range e.agent.Events(ctx, out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != run.EventContentDelta {
			continue
		}
		now, err := e.agent.GetRunOutput(ctx, out.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if now.Status != run.StatusRunning {
			t.Fatalf("first delta delivered when the run was already %s", now.Status)
		}
		break
	}
	if final := mustWait(t, e.agent, out.RunID); final.Status != run.StatusCompleted {
		t.Fatalf("final %s", final.Status)
	}
}

func TestEventsOfCancelledRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{FlushInterval: 5 * time.Millisecond})
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(2000), Drip: 2 * time.Millisecond}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "go", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	var events []run.Event
	for ev, err := range e.agent.Events(ctx, out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
		if ev.Type == run.EventContentDelta && len(events) == 4 {
			if ok, err := e.agent.CancelRun(ctx, out.RunID); err != nil || !ok {
				t.Fatalf("cancel: %v %v", ok, err)
			}
		}
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCancelled || events[len(events)-1].Type != run.EventRunCancelled {
		t.Fatalf("follower of a cancelled run ended with %s (run %s)", events[len(events)-1].Type, final.Status)
	}
	checkLog(t, events, final)

	// Cancelled before start: one event, run.cancelled.
	if _, err := e.agent.CancelRun(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.agent.Run(ctx, "go", agent.Background(true), agent.WithRunID("never")); err != nil {
		t.Fatal(err)
	}
	never := collect(t, e.agent, "never", 0)
	if len(never) != 1 || never[0].Type != run.EventRunCancelled {
		t.Fatalf("events of a run cancelled before start: %+v", never)
	}
}

func TestEventsOfUnknownRun(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	for _, err := range d.Events(context.Background(), "missing", 0) {
		if !errors.Is(err, run.ErrNotFound) {
			t.Fatalf("err = %v, want run.ErrNotFound", err)
		}
		return
	}
	t.Fatal("Events of an unknown run yielded nothing")
}

func TestForegroundOnEvent(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	srv.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(300), Drip: 2 * time.Millisecond} // streams ~0.6s: flushes while running
	})
	a := &agent.Agent{Name: "fg", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)

	var events []run.Event
	var sawDeltaWhileRunning bool
	out, err := a.Run(ctx, "go", agent.OnEvent(func(ev run.Event) {
		if ev.Type == run.EventContentDelta && len(events) == 1 {
			now, err := a.GetRunOutput(context.Background(), ev.RunID)
			sawDeltaWhileRunning = err == nil && now.Status == run.StatusRunning
		}
		events = append(events, ev)
	}))
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, events, out)
	if !sawDeltaWhileRunning {
		t.Fatal("the first delta was not delivered while the foreground run was running")
	}
}
