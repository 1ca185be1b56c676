package agent_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// completions records OnComplete calls.
type completions struct {
	mu    sync.Mutex
	calls map[string][]completionCall
}

type completionCall struct {
	worker string
	out    *run.Output
}

func newCompletions() *completions { return &completions{calls: map[string][]completionCall{}} }

func (c *completions) hook(worker string) func(context.Context, *run.Output) {
	return func(_ context.Context, out *run.Output) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls[out.RunID] = append(c.calls[out.RunID], completionCall{worker, out})
	}
}

func (c *completions) of(runID string) []completionCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]completionCall(nil), c.calls[runID]...)
}

func (c *completions) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, calls := range c.calls {
		n += len(calls)
	}
	return n
}

// TestOnCompleteEveryTerminalStatus: OnComplete is called exactly once for
// a run that completed, failed, was cancelled while it ran, was cancelled
// before it was submitted, and for a foreground run, with the final run.
func TestOnCompleteEveryTerminalStatus(t *testing.T) {
	t.Parallel()
	got := newCompletions()
	e := newEnv(t, agent.WorkerConfig{OnComplete: got.hook("w1"), RetryBaseDelay: time.Millisecond})
	ctx := kerntest.Context(t, 60*time.Second)

	submit := func(prompt string, opts ...agent.RunOption) string {
		t.Helper()
		out, err := e.agent.Run(ctx, prompt, append([]agent.RunOption{agent.Background(true)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out.RunID
	}
	want := map[string]run.Status{}

	want[submit("hello")] = run.StatusCompleted
	want[submit("fail [fake:status=400]")] = run.StatusError

	hung := submit("[fake:hang]")
	waitFor(t, 20*time.Second, "the hung run to run", func() bool {
		out, err := e.agent.GetRunOutput(ctx, hung)
		return err == nil && out.Status == run.StatusRunning
	})
	if ok, err := e.agent.CancelRun(ctx, hung); err != nil || !ok {
		t.Fatalf("cancel running: %v %v", ok, err)
	}
	want[hung] = run.StatusCancelled

	if ok, err := e.agent.CancelRun(ctx, "pre-cancelled"); err != nil || !ok {
		t.Fatalf("cancel before start: %v %v", ok, err)
	}
	want[submit("never asked", agent.WithRunID("pre-cancelled"))] = run.StatusCancelled

	fg, err := e.agent.Run(ctx, "in the foreground")
	if err != nil || fg.Status != run.StatusCompleted {
		t.Fatalf("foreground run: %v %v", fg, err)
	}
	want[fg.RunID] = run.StatusCompleted

	waitFor(t, 30*time.Second, "a completion for every run", func() bool {
		for id := range want {
			if len(got.of(id)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // a second call would come within a few outbox ticks
	for id, status := range want {
		calls := got.of(id)
		if len(calls) != 1 {
			t.Errorf("%s: OnComplete called %d times, want once", id, len(calls))
			continue
		}
		out := calls[0].out
		final, err := e.agent.GetRunOutput(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != status || final.Status != status || out.Content != final.Content ||
			out.FinishedAt == nil || !out.FinishedAt.Equal(*final.FinishedAt) {
			t.Errorf("%s: OnComplete got %s %q, the run is %s %q; want %s", id, out.Status, out.Content,
				final.Status, final.Content, status)
		}
	}
	if n := got.total(); n != len(want) {
		t.Errorf("%d OnComplete calls for %d runs", n, len(want))
	}
}

// TestOnCompleteInWorkerServingTheAgent: a run's OnComplete is called by a
// worker that serves its agent, never by one that serves another agent.
func TestOnCompleteInWorkerServingTheAgent(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	got := newCompletions()
	writer := &agent.Agent{Name: "writer", Model: model, DB: d}
	critic := &agent.Agent{Name: "critic", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{OnComplete: got.hook("writer-worker")}, writer)
	kerntest.Worker(t, d, agent.WorkerConfig{OnComplete: got.hook("critic-worker")}, critic)
	ctx := kerntest.Context(t, 60*time.Second)

	runs := map[string]string{}
	for i := range 5 {
		for _, a := range []*agent.Agent{writer, critic} {
			out, err := a.Run(ctx, fmt.Sprintf("run %d", i), agent.Background(true))
			if err != nil {
				t.Fatal(err)
			}
			runs[out.RunID] = a.Name + "-worker"
		}
	}
	waitFor(t, 30*time.Second, "every completion", func() bool { return got.total() >= len(runs) })
	time.Sleep(500 * time.Millisecond)
	for id, worker := range runs {
		calls := got.of(id)
		if len(calls) != 1 || calls[0].worker != worker {
			t.Errorf("%s: completions %+v, want one in %s", id, calls, worker)
		}
	}
}

// TestOnCompleteDoesNotBlockRuns: a slow OnComplete does not hold up the
// worker's runs: they are not executed on its path.
func TestOnCompleteDoesNotBlockRuns(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	called := 0
	e := newEnv(t, agent.WorkerConfig{MaxConcurrentRuns: 1, OnComplete: func(ctx context.Context, _ *run.Output) {
		mu.Lock()
		called++
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
	}})
	defer close(release)
	ctx := kerntest.Context(t, 60*time.Second)
	for i := range 5 {
		out, err := e.agent.Run(ctx, fmt.Sprintf("run %d", i), agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		if final := mustWait(t, e.agent, out.RunID); final.Status != run.StatusCompleted {
			t.Fatalf("run %d: %s %s", i, final.Status, final.Error)
		}
	}
	waitFor(t, 10*time.Second, "the blocked callbacks to start", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return called == 5
	})
}

// TestOnCompleteWebhookSecretChecked: a whsec_ secret that is not base64 is
// refused.
func TestOnCompleteWebhookSecretChecked(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	if _, err := agent.NewWorker(d, agent.WorkerConfig{WebhookSecret: "whsec_not*base64"}, a); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("NewWorker with a bad whsec_ secret: %v", err)
	}
	if _, err := agent.NewWorker(d, agent.WorkerConfig{WebhookSecret: "plain secret", OnComplete: func(context.Context, *run.Output) {}}, a); err != nil {
		t.Fatalf("NewWorker with OnComplete and a plain secret: %v", err)
	}
}
