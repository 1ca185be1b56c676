package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// counted is a tool that NeedsApproval and counts its calls.
func counted(name string, n *atomic.Int32) agent.Tool {
	return agent.Tool{Name: name, Description: "Deletes a file.", NeedsApproval: true,
		Call: func(context.Context, json.RawMessage) (string, error) { n.Add(1); return name + " done", nil }}
}

// askThenAnswer: the first turn asks for calls, the turn after their
// results answers "finished".
func askThenAnswer(calls ...fakellm.ToolCall) func(fakellm.Request) fakellm.Reply {
	return byStep(fakellm.Reply{Content: "Asking. ", ToolCalls: calls}, fakellm.Reply{Content: "finished"})
}

// submitWaiting submits a background run and returns it once it waits.
func submitWaiting(t *testing.T, e *env, prompt string, opts ...agent.RunOption) *run.Output {
	t.Helper()
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, prompt, append(opts, agent.Background(true))...)
	if err != nil {
		t.Fatal(err)
	}
	w := mustWait(t, e.agent, out.RunID)
	if w.Status != run.StatusWaiting || len(w.Waiting) == 0 {
		t.Fatalf("run %s: status %s, waiting %v; want waiting", w.RunID, w.Status, w.Waiting)
	}
	return w
}

func lastToolMessages(e *env) []fakellm.Message {
	reqs := e.model.Requests()
	var out []fakellm.Message
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == "tool" {
			out = append(out, m)
		}
	}
	return out
}

func TestApprovalApprove(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{"path":"a"}`}))
	ctx := kerntest.Context(t, 30*time.Second)

	w := submitWaiting(t, e, "delete a")
	if len(w.Waiting) != 1 || w.Waiting[0] != (run.ToolCall{ID: "c1", Name: "delete", Arguments: `{"path":"a"}`}) {
		t.Fatalf("waiting on %+v", w.Waiting)
	}
	if n.Load() != 0 {
		t.Fatal("the tool was called before it was approved")
	}
	list, err := e.db.ListRuns(ctx, run.ListParams{Statuses: []run.Status{run.StatusWaiting}})
	if err != nil || len(list.Runs) != 1 || list.Runs[0].RunID != w.RunID || len(list.Runs[0].Waiting) != 1 {
		t.Fatalf("ListRuns(waiting): %+v, %v", list, err)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted || final.Content != "finished" || len(final.Waiting) != 0 {
		t.Fatalf("run: %+v", final)
	}
	if n.Load() != 1 {
		t.Fatalf("tool called %d times, want 1", n.Load())
	}
	if tm := lastToolMessages(e); len(tm) != 1 || tm[0].Content != "delete done" {
		t.Fatalf("the model read %+v", tm)
	}
	if e.model.Count() != 2 {
		t.Fatalf("%d model requests, want 2: no finished step redone", e.model.Count())
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("second approve: %v, want ErrNotWaiting", err)
	}
	if roles(messages(t, e, w.RunID)) != "user,assistant,tool,assistant" {
		t.Fatal("transcript roles", roles(messages(t, e, w.RunID)))
	}
	var types []string
	for _, ev := range collect(t, e.agent, w.RunID, 0) {
		types = append(types, string(ev.Type))
		if ev.Type == run.EventRunWaiting && !strings.Contains(string(ev.Data), `"calls": [{"id": "c1"`) {
			t.Fatalf("run.waiting data %s", ev.Data)
		}
	}
	if want := "run.started,content.delta,tool.call,run.waiting,tool.approved,run.started,tool.result,content.delta,run.completed"; strings.Join(types, ",") != want {
		t.Fatalf("events %s\nwant   %s", strings.Join(types, ","), want)
	}
}

func TestApprovalReject(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "delete everything")
	if err := e.agent.RejectToolCall(ctx, w.RunID, "c1", "not on a Friday"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted || n.Load() != 0 {
		t.Fatalf("run %+v, tool called %d times", final, n.Load())
	}
	if tm := lastToolMessages(e); len(tm) != 1 || tm[0].Content != "rejected: not on a Friday" || tm[0].ToolCallID != "c1" {
		t.Fatalf("the model read %+v", tm)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("approve after reject: %v", err)
	}
}

func TestApprovalExternalResult(t *testing.T) {
	t.Parallel()
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{Name: "ask_human", Description: "Ask a person.", External: true})
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "q", Name: "ask_human", Arguments: `{"question":"colour?"}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "ask")
	if err := e.agent.SubmitToolResult(ctx, w.RunID, "q", "blue"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted {
		t.Fatalf("run %+v", final)
	}
	if tm := lastToolMessages(e); len(tm) != 1 || tm[0].Content != "blue" {
		t.Fatalf("the model read %+v", tm)
	}
	msgs := messages(t, e, w.RunID)
	if roles(msgs) != "user,assistant,tool,assistant" || msgs[2].Content != "blue" || msgs[2].ToolCallID != "q" {
		t.Fatalf("transcript %+v", msgs)
	}
	checkToolLog(t, e, final, 1)
}

// Two calls in one turn, one needing approval: the other runs at once and
// its result is stored before the run waits; after the approval neither
// runs again.
func TestApprovalTwoCallsOneNeedsApproval(t *testing.T) {
	t.Parallel()
	var plain, guarded atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &guarded), agent.Tool{Name: "lookup", Description: "Looks up.",
		Call: func(context.Context, json.RawMessage) (string, error) { plain.Add(1); return "found", nil }})
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "a", Name: "lookup", Arguments: `{}`}, fakellm.ToolCall{ID: "b", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "both")
	if len(w.Waiting) != 1 || w.Waiting[0].ID != "b" || plain.Load() != 1 || guarded.Load() != 0 {
		t.Fatalf("waiting %+v; lookup called %d, delete %d", w.Waiting, plain.Load(), guarded.Load())
	}
	if msgs := messages(t, e, w.RunID); roles(msgs) != "user,assistant,tool" || msgs[2].ToolCallID != "a" {
		t.Fatalf("transcript while waiting: %+v", msgs)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "b"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted || plain.Load() != 1 || guarded.Load() != 1 {
		t.Fatalf("run %+v; lookup called %d, delete %d", final, plain.Load(), guarded.Load())
	}
	tm := lastToolMessages(e)
	if len(tm) != 2 || tm[0].ToolCallID != "a" || tm[0].Content != "found" || tm[1].ToolCallID != "b" || tm[1].Content != "delete done" {
		t.Fatalf("the model read %+v", tm)
	}
	checkToolLog(t, e, final, 2)
}

// 20 concurrent answers to one call (approvals and rejections): exactly one
// stands, the others are ErrNotWaiting, and the tool runs at most once.
func TestApprovalConcurrentAnswers(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "race")

	var wg sync.WaitGroup
	var ok, notWaiting, approvedOK atomic.Int32
	start := make(chan struct{})
	for i := range 20 {
		wg.Go(func() {
			<-start
			var err error
			if i%4 == 3 {
				err = e.agent.RejectToolCall(ctx, w.RunID, "c1", "no")
			} else {
				err = e.agent.ApproveToolCall(ctx, w.RunID, "c1")
			}
			switch {
			case err == nil:
				ok.Add(1)
				if i%4 != 3 {
					approvedOK.Add(1)
				}
			case errors.Is(err, run.ErrNotWaiting):
				notWaiting.Add(1)
			default:
				t.Errorf("answer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || notWaiting.Load() != 19 {
		t.Fatalf("%d answers stood and %d were ErrNotWaiting, want 1 and 19", ok.Load(), notWaiting.Load())
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted || n.Load() != approvedOK.Load() {
		t.Fatalf("run %+v; tool called %d times, approvals that stood %d", final, n.Load(), approvedOK.Load())
	}
	var answers int
	for _, ev := range collect(t, e.agent, w.RunID, 0) {
		if ev.Type == run.EventToolApproved || ev.Type == run.EventToolRejected {
			answers++
		}
	}
	if answers != 1 {
		t.Fatalf("%d answer events, want 1", answers)
	}
}

func TestApprovalAnswerErrors(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "errors")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"unknown run", e.agent.ApproveToolCall(ctx, "nope", "c1"), run.ErrNotFound},
		{"call never asked", e.agent.ApproveToolCall(ctx, w.RunID, "other"), run.ErrNotWaiting},
		{"empty call id", e.agent.RejectToolCall(ctx, w.RunID, "", "x"), run.ErrInvalidArgument},
		{"output with NUL", e.agent.SubmitToolResult(ctx, w.RunID, "c1", "a\x00b"), run.ErrInvalidArgument},
		{"output too large", e.agent.SubmitToolResult(ctx, w.RunID, "c1", strings.Repeat("x", 5<<20)), run.ErrInvalidArgument},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
			continue
		}
		if msg := tc.err.Error(); !strings.HasPrefix(msg, "kern: ") || strings.Count(msg, "kern:") != 1 || len(msg) > 300 {
			t.Errorf("%s: %q does not read once", tc.name, msg)
		}
	}
	if out, err := e.agent.GetRunOutput(ctx, w.RunID); err != nil || out.Status != run.StatusWaiting || len(out.Waiting) != 1 {
		t.Fatalf("after refused answers: %+v, %v", out, err)
	}
	// A completed run is not waiting on anything.
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	mustWait(t, e.agent, w.RunID)
	if err := e.agent.SubmitToolResult(ctx, w.RunID, "c1", "x"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("answer to a completed run: %v", err)
	}
}

// A waiting run holds no worker slot: with MaxConcurrentRuns 1, another
// run completes while one waits.
func TestApprovalWaitingHoldsNoSlot(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{MaxConcurrentRuns: 1}, 0, counted("delete", &n))
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if req.LastUserMessage() == "plain" {
			return fakellm.Reply{Content: "plain answer"}
		}
		return askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`})(req)
	})
	w := submitWaiting(t, e, "wait")
	other := runTool(t, e, "plain")
	if other.Status != run.StatusCompleted {
		t.Fatalf("other run: %+v", other)
	}
	if out, err := e.agent.GetRunOutput(kerntest.Context(t, 5*time.Second), w.RunID); err != nil || out.Status != run.StatusWaiting {
		t.Fatalf("waiting run: %+v, %v", out, err)
	}
}

func TestApprovalCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "cancel me")
	ok, err := e.agent.CancelRun(ctx, w.RunID)
	if err != nil || !ok {
		t.Fatalf("cancel: %v, %v", ok, err)
	}
	out, err := e.agent.GetRunOutput(ctx, w.RunID)
	if err != nil || out.Status != run.StatusCancelled || len(out.Waiting) != 0 {
		t.Fatalf("at once after cancel: %+v, %v", out, err)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("approve after cancel: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if out, _ := e.agent.GetRunOutput(ctx, w.RunID); out.Status != run.StatusCancelled || n.Load() != 0 {
		t.Fatalf("later: %+v, tool called %d times", out, n.Load())
	}
}

func TestApprovalWaitTimeout(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{HeartbeatInterval: 50 * time.Millisecond}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "nobody answers", agent.WithWaitTimeout(300*time.Millisecond), agent.WithTimeout(time.Minute))
	if w.WaitTimeout != 300*time.Millisecond {
		t.Fatalf("WaitTimeout %v", w.WaitTimeout)
	}
	var final *run.Output
	waitFor(t, 10*time.Second, "the wait to end", func() bool {
		out, err := e.agent.GetRunOutput(ctx, w.RunID)
		final = out
		return err == nil && out.Status.Terminal()
	})
	if final.Status != run.StatusError || final.Error != "waited too long for an answer (300ms)" {
		t.Fatalf("run: %+v", final)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); !errors.Is(err, run.ErrNotWaiting) {
		t.Fatalf("approve after the wait ended: %v", err)
	}
	events := collect(t, e.agent, w.RunID, 0)
	if last := events[len(events)-1]; last.Type != run.EventRunError {
		t.Fatalf("last event %s", last.Type)
	}
}

// The time spent waiting does not count against the run's timeout: each
// execution has all of it. The wait (3.5 s) outlasts the timeout (3 s),
// which leaves a loaded machine seconds for the run's own work.
func TestApprovalWaitNotCountedInTimeout(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "slow human", agent.WithTimeout(3*time.Second))
	time.Sleep(3500 * time.Millisecond)
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	if final := mustWait(t, e.agent, w.RunID); final.Status != run.StatusCompleted {
		t.Fatalf("run: %+v", final)
	}
}

// A foreground Run returns when the run starts waiting; a worker
// continues it after the answer.
func TestApprovalForeground(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "foreground")
	if err != nil || out.Status != run.StatusWaiting {
		t.Fatalf("foreground run: %+v, %v", out, err)
	}
	if err := e.agent.ApproveToolCall(ctx, out.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	if final := mustWait(t, e.agent, out.RunID); final.Status != run.StatusCompleted || n.Load() != 1 {
		t.Fatalf("run %+v, tool called %d", final, n.Load())
	}
}

// Every worker stops while runs wait; answers come while none runs and
// after a new one started; every run resumes and completes, each tool
// called once.
func TestApprovalSurvivesRestart(t *testing.T) {
	t.Parallel()
	runs := 50
	if testing.Short() {
		runs = 15 // the long tier (make test-long) runs 50
	}
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	var calls sync.Map // run id → *atomic.Int32
	a := &agent.Agent{Name: "approver", Model: model, DB: d, Tools: []agent.Tool{{
		Name: "delete", NeedsApproval: true,
		Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
			id, _, _ := strings.Cut(agent.ToolCallID(ctx), "/")
			c, _ := calls.LoadOrStore(id, new(atomic.Int32))
			c.(*atomic.Int32).Add(1)
			return "ok", nil
		}}}}
	srv.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 60*time.Second)
	start := func() *agent.Worker {
		w, err := agent.NewWorker(d, agent.WorkerConfig{MaxConcurrentRuns: 4, Logger: slog.New(slog.DiscardHandler)}, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1 := start()
	ids := make([]string, runs)
	for i := range ids {
		out, err := a.Run(ctx, fmt.Sprintf("run %d", i), agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	for _, id := range ids {
		if out := mustWait(t, a, id); out.Status != run.StatusWaiting {
			t.Fatalf("run %s: %s", id, out.Status)
		}
	}
	if err := w1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[:runs/2] {
		if err := a.ApproveToolCall(ctx, id, "c1"); err != nil {
			t.Fatal(err)
		}
	}
	w2 := start()
	defer func() { _ = w2.Stop(context.Background()) }()
	for _, id := range ids[runs/2:] {
		if err := a.ApproveToolCall(ctx, id, "c1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		out := mustWait(t, a, id)
		c, _ := calls.Load(id)
		if out.Status != run.StatusCompleted || c == nil || c.(*atomic.Int32).Load() != 1 {
			t.Fatalf("run %s: %+v, tool called %v", id, out, c)
		}
	}
	if got := srv.Count(); got != 2*runs {
		t.Fatalf("%d model requests, want %d", got, 2*runs)
	}
}

func TestApprovalToolValidation(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	ctx := kerntest.Context(t, 10*time.Second)
	for _, tc := range []struct {
		name string
		tool agent.Tool
	}{
		{"External with a Call", agent.Tool{Name: "x", External: true, Call: okTool}},
		{"External and NeedsApproval", agent.Tool{Name: "x", External: true, NeedsApproval: true}},
		{"no Call", agent.Tool{Name: "x", NeedsApproval: true}},
	} {
		a := &agent.Agent{Name: "v", Model: model, DB: d, Tools: []agent.Tool{tc.tool}}
		if _, err := a.Run(ctx, "hi", agent.Background(true)); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	a := &agent.Agent{Name: "v", Model: model, DB: d}
	if _, err := a.Run(ctx, "hi", agent.Background(true), agent.WithWaitTimeout(-time.Second)); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("negative wait timeout: %v", err)
	}
	if list, err := d.ListRuns(ctx, run.ListParams{}); err != nil || len(list.Runs) != 0 {
		t.Fatalf("something was written: %+v, %v", list, err)
	}
}
