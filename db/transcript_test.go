package db_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A turn and a tool result whose replies are lost after Postgres committed
// them are sent again by the worker, at the same seqs: each is stored once,
// and the events stay gap-free.
func TestTranscriptStepsWithLostRepliesAreWrittenOnce(t *testing.T) {
	t.Parallel()
	d, proxy := kerntest.ProxiedDB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := d.Engine(engine.Key{})
	claim := startedRun(t, ctx, d, "r")
	if claim.TranscriptSeq != 1 {
		t.Fatalf("a new run's transcript seq is %d, want 1 (the prompt)", claim.TranscriptSeq)
	}
	seq := claim.EventSeq + 1
	if err := e.AppendContent(ctx, claim.Fence, seq, "Let me "); err != nil {
		t.Fatal(err)
	}
	turn := engine.Turn{Seq: 2, Content: "Let me check.", Tail: "check.",
		Calls: []run.ToolCall{{ID: "c1", Name: "lookup", Arguments: `{"q":`}}, Usage: engine.Usage{InputTokens: 5, OutputTokens: 3, TotalTokens: 8}}
	cut := proxy.CutAfterCommit("req_calls")
	if err := e.StoreTurn(ctx, claim.Fence, seq+1, turn); err == nil {
		t.Fatal("the turn whose reply was cut reported success")
	}
	<-cut
	if err := e.StoreTurn(ctx, claim.Fence, seq+1, turn); err != nil {
		t.Fatalf("sending the turn in doubt again: %v", err)
	}
	if got, _ := d.GetRun(ctx, "r"); got.Content != "" || got.Metrics.ModelTurns != 1 || got.Metrics.ToolCalls != 1 || got.Metrics.TotalTokens != 8 {
		t.Fatalf("after the turn: content %q, metrics %+v; want the content reset and the turn counted", got.Content, got.Metrics)
	}
	res := engine.ToolResult{Seq: 3, CallID: "c1", Name: "lookup", Output: "found"}
	cut = proxy.CutAfterCommit("req_output")
	if err := e.StoreToolResult(ctx, claim.Fence, seq+3, res); err == nil {
		t.Fatal("the result whose reply was cut reported success")
	}
	<-cut
	if err := e.StoreToolResult(ctx, claim.Fence, seq+3, res); err != nil {
		t.Fatalf("sending the result in doubt again: %v", err)
	}
	fin := engine.Finish{Status: run.StatusCompleted, Tail: "Found it.", Metrics: run.Metrics{ModelTurns: 2, ToolCalls: 1}}
	if err := e.FinishRun(ctx, claim.Fence, fin); err != nil {
		t.Fatal(err)
	}

	steps, err := e.Steps(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || steps[0].Seq != 2 || steps[0].Role != "assistant" || steps[0].Content != "Let me check." ||
		!slices.Equal(steps[0].ToolCalls, turn.Calls) || steps[0].Usage != turn.Usage ||
		steps[1].Seq != 3 || steps[1].Role != "tool" || steps[1].Content != "found" || steps[1].ToolCallID != "c1" || steps[1].ToolName != "lookup" {
		t.Fatalf("steps %+v", steps)
	}
	msgs, err := d.Messages(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	want := []run.Message{
		{Seq: 1, Role: "user", Content: "x"},
		{Seq: 2, Role: "assistant", Content: "Let me check.", ToolCalls: turn.Calls},
		{Seq: 3, Role: "tool", Content: "found", ToolCallID: "c1"},
		{Seq: 4, Role: "assistant", Content: "Found it."},
	}
	if len(msgs) != len(want) {
		t.Fatalf("messages %+v", msgs)
	}
	for i, m := range msgs {
		w := want[i]
		if m.Seq != w.Seq || m.Role != w.Role || m.Content != w.Content || m.ToolCallID != w.ToolCallID || !slices.Equal(m.ToolCalls, w.ToolCalls) || m.At.IsZero() {
			t.Fatalf("message %d: %+v, want %+v", i, m, w)
		}
	}
	var types []run.EventType
	for ev, err := range d.Events(ctx, "r", 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq != int64(len(types)+1) {
			t.Fatalf("event seq %d after %d events", ev.Seq, len(types))
		}
		types = append(types, ev.Type)
	}
	wantTypes := []run.EventType{run.EventRunStarted, run.EventContentDelta, run.EventContentDelta, run.EventToolCall,
		run.EventToolResult, run.EventContentDelta, run.EventRunCompleted}
	if !slices.Equal(types, wantTypes) {
		t.Fatalf("events %v, want %v", types, wantTypes)
	}
}

// Step writes are fenced like every write of an execution; a new
// execution's claim says there are steps to resume from; retention deletes
// them with their run.
func TestTranscriptIsFencedResumedAndDeleted(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := d.Engine(engine.Key{})
	claim := startedRun(t, ctx, d, "r")
	turn := engine.Turn{Seq: 2, Calls: []run.ToolCall{{ID: "a", Name: "t"}, {ID: "b", Name: "t"}}}
	stale := engine.Fence{RunID: "r", Execution: claim.Fence.Execution - 1}
	if err := e.StoreTurn(ctx, stale, claim.EventSeq+1, turn); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("a turn of another execution: %v, want run.ErrNotRunning", err)
	}
	if err := e.StoreTurn(ctx, claim.Fence, claim.EventSeq+1, turn); err != nil {
		t.Fatal(err)
	}
	// The second call's result commits first; it reads in the asked place.
	if err := e.StoreToolResult(ctx, claim.Fence, claim.EventSeq+3, engine.ToolResult{Seq: 4, CallID: "b", Name: "t", Output: "B"}); err != nil {
		t.Fatal(err)
	}
	if err := e.ReleaseRun(ctx, claim.Fence); err != nil {
		t.Fatal(err)
	}
	again, err := e.StartRun(ctx, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.TranscriptSeq != 4 {
		t.Fatalf("the resuming claim's transcript seq is %d, want 4 (a turn and two reserved results)", again.TranscriptSeq)
	}
	if err := e.StoreToolResult(ctx, claim.Fence, again.EventSeq+1, engine.ToolResult{Seq: 3, CallID: "a", Name: "t", Output: "A"}); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("a result of the released execution: %v, want run.ErrNotRunning", err)
	}
	if err := e.StoreToolResult(ctx, again.Fence, again.EventSeq+1, engine.ToolResult{Seq: 3, CallID: "a", Name: "t", Output: "A"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CancelRun(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if err := e.StoreToolResult(ctx, again.Fence, again.EventSeq+2, engine.ToolResult{Seq: 5, CallID: "x", Name: "t"}); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("a result after the cancel: %v, want run.ErrNotRunning", err)
	}
	msgs, err := d.Messages(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 || msgs[2].ToolCallID != "a" || msgs[3].ToolCallID != "b" {
		t.Fatalf("messages of the cancelled run %+v: want the prompt, the turn, the results in asked order, no answer", msgs)
	}

	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET finished_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	if n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}); err != nil || n != 1 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	if left := count(t, ctx, d, `SELECT count(*) FROM kern_run_step`); left != 0 {
		t.Fatalf("%d steps of the deleted run left", left)
	}
	if _, err := d.Messages(ctx, "r"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("messages of a deleted run: %v", err)
	}
}
