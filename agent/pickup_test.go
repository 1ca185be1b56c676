package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Runs submitted one right after another each tell the worker: none waits
// for its poll. River's inserting client sends at most one notification per
// queue per its FetchCooldown (100ms by default), so the second of two quick
// submits used to reach an idle worker only at its next poll — here an hour
// away, so only a notification can wake it within the test's deadline.
func TestQuickSuccessiveSubmitsEachReachAnIdleWorker(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{FetchPollInterval: time.Hour}, a)
	ctx := kerntest.Context(t, 30*time.Second)
	for i := range 20 {
		out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		final, err := a.WaitRun(waitCtx, out.RunID)
		cancel()
		if err != nil {
			t.Fatalf("run %d, submitted right after the one before, did not reach the idle worker: %v", i, err)
		}
		if final.Status != run.StatusCompleted {
			t.Fatalf("run %d: %s %q", i, final.Status, final.Error)
		}
	}
}
