package agent_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// scripted answers request n (1-based) with replies[n-1], and later ones
// with the last reply.
func scripted(replies ...fakellm.Reply) func(fakellm.Request) fakellm.Reply {
	return func(req fakellm.Request) fakellm.Reply {
		return replies[min(req.Seq, len(replies))-1]
	}
}

func eventTypes(t *testing.T, a *agent.Agent, runID string) []run.EventType {
	t.Helper()
	var types []run.EventType
	for _, ev := range collect(t, a, runID, 0) {
		types = append(types, ev.Type)
	}
	return types
}

func TestRetryThenSucceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{RetryBaseDelay: time.Millisecond})
	e.model.Script(scripted(
		fakellm.Reply{Status: 503, ErrorMessage: "overloaded"},
		fakellm.Reply{Content: "partial answer that breaks", CutAfter: 2},
		fakellm.Reply{Content: "The capital of France is Paris."},
	))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "The capital of France is Paris." || final.Attempt != 3 || final.Error != "" {
		t.Fatalf("after two retryable failures: %+v", final)
	}
	if n := e.model.Count(); n != 3 {
		t.Fatalf("model called %d times, want 3", n)
	}
	types := eventTypes(t, e.agent, out.RunID)
	retries := 0
	for _, ty := range types {
		if ty == run.EventRunRetrying {
			retries++
		}
	}
	if retries != 2 || types[len(types)-1] != run.EventRunCompleted {
		t.Fatalf("events %v: want two run.retrying and run.completed last", types)
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{RetryBaseDelay: time.Millisecond})
	e.model.Script(scripted(
		fakellm.Reply{Status: 429, ErrorMessage: "slow down", RetryAfter: "1"},
		fakellm.Reply{Content: "ok"},
	))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if final := mustWait(t, e.agent, out.RunID); final.Status != run.StatusCompleted {
		t.Fatalf("final %+v", final)
	}
	reqs := e.model.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if gap := reqs[1].ReceivedAt.Sub(reqs[0].ReceivedAt); gap < time.Second {
		t.Fatalf("retried after %v; the provider asked for 1s (Retry-After)", gap)
	}
	var retrying struct {
		RetryInMs int64  `json:"retry_in_ms"`
		Error     string `json:"error"`
	}
	for _, ev := range collect(t, e.agent, out.RunID, 0) {
		if ev.Type == run.EventRunRetrying {
			if err := json.Unmarshal(ev.Data, &retrying); err != nil {
				t.Fatal(err)
			}
		}
	}
	if retrying.RetryInMs != 1000 || !strings.Contains(retrying.Error, "429") {
		t.Fatalf("run.retrying data %+v", retrying)
	}
}

func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxAttempts: 3, RetryBaseDelay: time.Millisecond})
	e.model.Script(scripted(fakellm.Reply{Status: 500, ErrorMessage: "boom"}))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusError || !strings.Contains(final.Error, "HTTP 500: boom") || !strings.Contains(final.Error, "attempt 3 of 3") {
		t.Fatalf("final %+v", final)
	}
	if n := e.model.Count(); n != 3 {
		t.Fatalf("model called %d times, want 3", n)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	e.model.Script(scripted(fakellm.Reply{Status: 503, ErrorMessage: "later", RetryAfter: "60"}))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	var waiting *run.Output
	waitFor(t, 20*time.Second, "the run to wait for its retry", func() bool {
		waiting, err = e.agent.GetRunOutput(ctx, out.RunID)
		return err == nil && waiting.Status == run.StatusPending && waiting.Attempt == 1
	})
	if !strings.Contains(waiting.Error, "503") {
		t.Fatalf("a run waiting for a retry should show the last error: %+v", waiting)
	}
	ok, err := e.agent.CancelRun(ctx, out.RunID)
	if err != nil || !ok {
		t.Fatalf("cancel during backoff: %v, %v", ok, err)
	}
	if got, _ := e.agent.GetRunOutput(ctx, out.RunID); got.Status != run.StatusCancelled {
		t.Fatalf("status right after CancelRun: %s", got.Status)
	}
	if n := e.model.Count(); n != 1 {
		t.Fatalf("model called %d times", n)
	}
}

func TestTooLargeAnswerIsAnError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxContentBytes: 1000})
	e.model.Script(scripted(fakellm.Reply{Content: fakellm.LoremWords(2000)}))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusError || !strings.Contains(final.Error, "exceeded the limit of 1000 bytes") || len(final.Content) > 1000 {
		t.Fatalf("too large: %s %q (%d bytes kept)", final.Status, final.Error, len(final.Content))
	}
}

func TestGracefulStopHandsRunsBack(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	srv.Script(scripted(fakellm.Reply{Hang: true}, fakellm.Reply{Content: "done elsewhere"}))
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)

	first, err := agent.NewWorker(d, agent.WorkerConfig{}, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(ctx, "q", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := first.Stop(stopCtx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	back, _ := a.GetRunOutput(ctx, out.RunID)
	if back.Status != run.StatusPending || back.Attempt != 0 {
		t.Fatalf("after a graceful stop the run should be pending with its attempt given back: %+v", back)
	}

	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	final := mustWait(t, a, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "done elsewhere" || final.Attempt != 1 {
		t.Fatalf("handed-back run: %+v", final)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)
	const submitters = 10
	ids := make([]string, submitters)
	var wg sync.WaitGroup
	for i := range submitters {
		wg.Go(func() {
			out, err := e.agent.Run(ctx, "q", agent.Background(true), agent.WithIdempotencyKey("order-7"))
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			ids[i] = out.RunID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one key gave several runs: %v", ids)
		}
	}
	mustWait(t, e.agent, ids[0])
	var runs, jobs int
	if err := e.db.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM kern_run), (SELECT count(*) FROM river_job)`).Scan(&runs, &jobs); err != nil {
		t.Fatal(err)
	}
	if runs != 1 || jobs != 1 || e.model.Count() != 1 {
		t.Fatalf("%d runs, %d jobs, %d model calls for one key", runs, jobs, e.model.Count())
	}
	again, err := e.agent.Run(ctx, "q", agent.Background(true), agent.WithIdempotencyKey("order-7"))
	if err != nil || again.RunID != ids[0] || again.Status != run.StatusCompleted {
		t.Fatalf("submit after completion: %+v, %v", again, err)
	}
	other, err := e.agent.Run(ctx, "q", agent.Background(true), agent.WithIdempotencyKey("order-8"))
	if err != nil || other.RunID == ids[0] {
		t.Fatalf("another key: %+v, %v", other, err)
	}
}

// A run whose worker died mid-run (simulated: claimed, then never heard of
// again) is rescued by a live worker and completed.
func TestRescueOfADeadWorkersRun(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)

	// The "dead worker": a foreground-style claim that never heartbeats.
	out, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "orphan", AgentName: "a", Input: "What is the capital of France?"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Engine(engine.Key{}).StartRun(ctx, out.RunID, nil); err != nil {
		t.Fatal(err)
	}
	kerntest.Worker(t, d, agent.WorkerConfig{RescueAfter: time.Second, HeartbeatInterval: 100 * time.Millisecond}, a)
	final := mustWait(t, a, "orphan")
	if final.Status != run.StatusCompleted || final.Attempt != 2 || final.Content != "The capital of France is Paris." {
		t.Fatalf("rescued run: %+v", final)
	}
}
