package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// When a keyed run ends, the run of its key that it held back starts without
// waiting for a poll: with River's FetchPollInterval an hour, the only way
// the second run's put-back job is fetched again is the worker's wake-up.
func TestKeyedRunEndingWakesTheNextRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxRunsPerKey: 1, FetchPollInterval: time.Hour})
	release := make(chan struct{})
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(userPrompt(req), "first") {
			<-release
		}
		return fakellm.Reply{Content: "done: " + userPrompt(req)}
	})
	var released bool
	defer func() {
		if !released {
			close(release)
		}
	}()
	ctx := kerntest.Context(t, time.Minute)
	submit := func(prompt string) *run.Output {
		t.Helper()
		out, err := e.agent.Run(ctx, prompt, agent.Background(true), agent.WithConcurrencyKey("customer-7"))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := submit("first")
	if err := e.model.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	second := submit("second")
	// The second run was refused, and its job put back (snoozed).
	waitFor(t, 30*time.Second, "the second run's job to be put back", func() bool {
		var snoozed bool
		err := e.db.Pool().QueryRow(ctx, `SELECT coalesce((j.metadata->>'snoozes')::int, 0) > 0 AND j.state <> 'running'
			FROM kern_run r JOIN river_job j ON j.id = r.job_id WHERE r.id = $1`, second.RunID).Scan(&snoozed)
		return err == nil && snoozed
	})
	released = true
	close(release)
	if out := mustWait(t, e.agent, first.RunID); out.Status != run.StatusCompleted {
		t.Fatalf("first run: %s %q", out.Status, out.Error)
	}
	if out := mustWait(t, e.agent, second.RunID); out.Status != run.StatusCompleted || out.Attempt != 1 {
		t.Fatalf("second run: %s %q, attempt %d", out.Status, out.Error, out.Attempt)
	}
}
