package agent_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A run cancelled while it streams reports its duration, from its start
// to its end as stored, not 0.
func TestMetricsCancelledMidStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "[fake:words=2000,drip=5ms] stream slowly", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "streamed content", func() bool {
		got, err := e.agent.GetRunOutput(ctx, out.RunID)
		return err == nil && got.Content != ""
	})
	if ok, err := e.agent.CancelRun(ctx, out.RunID); err != nil || !ok {
		t.Fatalf("cancel: %v, %v", ok, err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCancelled || final.StartedAt == nil || final.FinishedAt == nil {
		t.Fatalf("run %+v", final)
	}
	span := final.FinishedAt.Sub(*final.StartedAt)
	if m := final.Metrics; m.Duration <= 0 || m.Duration < span-time.Millisecond {
		t.Fatalf("cancelled run: Duration %v, started to finished %v", m.Duration, span)
	}
}

// A run that waited for an approval reports what both of its executions
// cost: the tokens of every model call, the time to the first token of its
// first execution, and its duration from its first start to its end.
func TestMetricsAcrossAWait(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, counted("delete", &n))
	e.model.Script(askThenAnswer(fakellm.ToolCall{ID: "c1", Name: "delete", Arguments: `{}`}))
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "delete a")
	if w.Metrics.TimeToFirstToken <= 0 || w.Metrics.InputTokens <= 0 {
		t.Fatalf("waiting run's metrics %+v: want the first execution's", w.Metrics)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, w.RunID)
	if final.Status != run.StatusCompleted {
		t.Fatalf("run %+v", final)
	}
	reqs := e.model.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests, want 2", len(reqs))
	}
	m := final.Metrics
	if want := reqs[0].PromptTokens + reqs[1].PromptTokens; m.InputTokens != want {
		t.Errorf("InputTokens %d, want %d (both model calls)", m.InputTokens, want)
	}
	if m.OutputTokens <= w.Metrics.OutputTokens || m.TotalTokens != m.InputTokens+m.OutputTokens || m.ModelTurns != 2 {
		t.Errorf("metrics %+v after the wait's %+v", m, w.Metrics)
	}
	if m.TimeToFirstToken != w.Metrics.TimeToFirstToken {
		t.Errorf("TimeToFirstToken %v, want the first execution's %v", m.TimeToFirstToken, w.Metrics.TimeToFirstToken)
	}
	if span := final.FinishedAt.Sub(*final.StartedAt); m.Duration < span-time.Millisecond || m.Duration > span+time.Millisecond {
		t.Errorf("Duration %v, want started to finished, %v", m.Duration, span)
	}
}
