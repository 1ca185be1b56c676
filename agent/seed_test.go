package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// The three scenarios of the seed cookbook, background_execution.

func TestSeedBackgroundRunWithPolling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := e.agent.Run(ctx, "What is the capital of France?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != run.StatusPending || out.RunID == "" {
		t.Fatalf("background Run returned %s (id %q), want pending with an id", out.Status, out.RunID)
	}
	var got *run.Output
	waitFor(t, 30*time.Second, "run to complete", func() bool {
		got, err = e.agent.GetRunOutput(ctx, out.RunID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.Terminal()
	})
	if got.Status != run.StatusCompleted || got.Content != "The capital of France is Paris." {
		t.Fatalf("final run: status %s content %q error %q", got.Status, got.Content, got.Error)
	}
	if got.Attempt != 1 || got.StartedAt == nil || got.FinishedAt == nil || got.Metrics.OutputTokens == 0 ||
		got.Metrics.TotalTokens != got.Metrics.InputTokens+got.Metrics.OutputTokens || got.Metrics.TimeToFirstToken <= 0 {
		t.Fatalf("final run bookkeeping: %+v", got)
	}
	reqs := e.model.Requests()
	if len(reqs) != 1 || !reqs[0].Stream || !reqs[0].IncludeUsage || reqs[0].Messages[0].Content != "Be brief." {
		t.Fatalf("model requests: %+v", reqs)
	}
}

func TestSeedCancelRunningRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{FlushInterval: 20 * time.Millisecond})
	full := fakellm.LoremWords(2000)
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: full, Drip: 2 * time.Millisecond}
	})
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := e.agent.Run(ctx, "Write a 5000-word essay", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "partial content", func() bool {
		got, err := e.agent.GetRunOutput(ctx, out.RunID)
		return err == nil && got.Status == run.StatusRunning && got.Content != ""
	})
	ok, err := e.agent.CancelRun(ctx, out.RunID)
	cancelled := time.Now()
	if err != nil || !ok {
		t.Fatalf("CancelRun = %v, %v; want true", ok, err)
	}

	gone, err := e.model.WaitClientGone(ctx, 1)
	if err != nil {
		t.Fatalf("the model never saw the client go away: %v", err)
	}
	if lag := gone.ClientGoneAt.Sub(cancelled); lag > 500*time.Millisecond {
		t.Fatalf("model stream closed %v after CancelRun returned, want ≤ 500ms", lag)
	}

	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCancelled {
		t.Fatalf("final status %s, want cancelled", final.Status)
	}
	if final.Content == "" || len(final.Content) >= len(full) || !strings.HasPrefix(full, final.Content) {
		t.Fatalf("cancelled content (%d bytes) is not a strict, non-empty prefix of the answer (%d bytes)", len(final.Content), len(full))
	}
	if ok, err := e.agent.CancelRun(ctx, out.RunID); err != nil || !ok {
		t.Fatalf("second CancelRun = %v, %v; want true (idempotent)", ok, err)
	}
}

func TestSeedCancelBeforeStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)
	runID := uuid.NewString()

	ok, err := e.agent.CancelRun(ctx, runID)
	if err != nil || !ok {
		t.Fatalf("CancelRun before start = %v, %v; want true", ok, err)
	}
	out, err := e.agent.Run(ctx, "What is the capital of France?", agent.Background(true), agent.WithRunID(runID))
	if err != nil {
		t.Fatal(err)
	}
	if out.RunID != runID || out.Status != run.StatusPending {
		t.Fatalf("Run returned %s %s", out.RunID, out.Status)
	}
	// Only the worker's claim can move a never-started run to cancelled.
	final := mustWait(t, e.agent, runID)
	if final.Status != run.StatusCancelled || final.Content != "" {
		t.Fatalf("final: %s %q", final.Status, final.Content)
	}
	if n := e.model.Count(); n != 0 {
		t.Fatalf("the model was called %d times for a pre-cancelled run", n)
	}
}

func TestCancelFinishedRunIsFalse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "What is the capital of France?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	done := mustWait(t, e.agent, out.RunID)
	if done.Status != run.StatusCompleted {
		t.Fatalf("status %s", done.Status)
	}
	for range 2 {
		if ok, err := e.agent.CancelRun(ctx, out.RunID); err != nil || ok {
			t.Fatalf("CancelRun on a completed run = %v, %v; want false", ok, err)
		}
	}
	again, _ := e.agent.GetRunOutput(ctx, out.RunID)
	if again.Status != run.StatusCompleted || again.Content != done.Content || !again.FinishedAt.Equal(*done.FinishedAt) {
		t.Fatalf("CancelRun changed a finished run: %+v", again)
	}
}
