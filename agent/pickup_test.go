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

// Under load, submit commits share notifications (db's insert notifier
// coalesces them), but every commit is still followed by one: a burst from
// many submitters all reaches a worker that never polls, the last runs
// included.
func TestABurstOfSubmitsAllReachAWorkerThatNeverPolls(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{FetchPollInterval: time.Hour, MaxConcurrentRuns: 50}, a)
	ctx := kerntest.Context(t, 60*time.Second)
	const submitters, each = 16, 25
	ids := make(chan string, submitters*each)
	errs := make(chan error, submitters)
	for range submitters {
		go func() {
			for range each {
				out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
				if err != nil {
					errs <- err
					return
				}
				ids <- out.RunID
			}
			errs <- nil
		}()
	}
	for range submitters {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(ids)
	for id := range ids {
		waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		final, err := a.WaitRun(waitCtx, id)
		cancel()
		if err != nil {
			t.Fatalf("run %s of the burst never reached the worker: %v", id, err)
		}
		if final.Status != run.StatusCompleted {
			t.Fatalf("run %s: %s %q", id, final.Status, final.Error)
		}
	}
}
