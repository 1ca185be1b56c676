package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestCancelRaceInvariant cancels hundreds of runs at random moments —
// before submit, while pending, while streaming, around completion, after —
// and checks the promise of CancelRun for every one: true means the run
// ends cancelled; false means it had finished, and it stays as it was.
func TestCancelRaceInvariant(t *testing.T) {
	t.Parallel()
	runs := 320
	if testing.Short() {
		runs = 100 // the long tier (make test-long) runs 320
	}
	e := newEnv(t, agent.WorkerConfig{MaxConcurrentRuns: 16, FlushInterval: 2 * time.Millisecond})
	answer := fakellm.LoremWords(12)
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: answer, Drip: time.Millisecond}
	})
	ctx := kerntest.Context(t, 2*time.Minute)

	type outcome struct {
		id        string
		cancelled bool
	}
	results := make([]outcome, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			id := fmt.Sprintf("race-%03d", i)
			results[i].id = id
			cancel := func() {
				ok, err := e.agent.CancelRun(ctx, id)
				if err != nil {
					t.Errorf("%s: cancel: %v", id, err)
				}
				results[i].cancelled = ok
			}
			mode := i % 5
			if mode == 0 { // before the run exists
				cancel()
			}
			if _, err := e.agent.Run(ctx, "go", agent.Background(true), agent.WithRunID(id)); err != nil {
				t.Errorf("%s: submit: %v", id, err)
				return
			}
			switch mode {
			case 1: // at once: pending, or just claimed
				cancel()
			case 2, 3: // while it streams, or around its completion
				for {
					out, err := e.agent.GetRunOutput(ctx, id)
					if err != nil {
						t.Errorf("%s: get: %v", id, err)
						return
					}
					if out.Status != run.StatusPending {
						break
					}
					time.Sleep(time.Millisecond)
				}
				// The random moment of the cancel, not synchronisation.
				time.Sleep(time.Duration(rand.IntN(25)) * time.Millisecond)
				cancel()
			case 4: // after it finished: must answer false
				if _, err := e.agent.WaitRun(ctx, id); err != nil {
					t.Errorf("%s: wait: %v", id, err)
				}
				cancel()
			}
		})
	}
	wg.Wait()

	var cancelled, completed int
	for _, r := range results {
		final := mustWait(t, e.agent, r.id)
		switch {
		case r.cancelled && final.Status != run.StatusCancelled:
			t.Errorf("%s: CancelRun answered true but the run ended %s", r.id, final.Status)
		case !r.cancelled && final.Status != run.StatusCompleted:
			t.Errorf("%s: CancelRun answered false but the run ended %s (%s)", r.id, final.Status, final.Error)
		case final.Status == run.StatusCompleted && final.Content != answer:
			t.Errorf("%s: completed with content %q", r.id, final.Content)
		case final.Status == run.StatusCancelled && !strings.HasPrefix(answer, final.Content):
			t.Errorf("%s: cancelled content %q is not a prefix of the answer", r.id, final.Content)
		}
		if final.Status == run.StatusCancelled {
			cancelled++
		} else {
			completed++
		}
	}
	// A terminal status never changes: read everything again after quiescence.
	for _, r := range results {
		again, err := e.agent.GetRunOutput(context.Background(), r.id)
		if err != nil || again.Status.Terminal() != true || (r.cancelled != (again.Status == run.StatusCancelled)) {
			t.Errorf("%s: re-read %v, %v", r.id, again, err)
		}
	}
	t.Logf("%d runs: %d cancelled, %d completed", runs, cancelled, completed)
	if cancelled == 0 || completed == 0 {
		t.Fatalf("the random delays did not exercise both outcomes (%d cancelled, %d completed)", cancelled, completed)
	}
}
