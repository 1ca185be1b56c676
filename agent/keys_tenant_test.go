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

// A concurrency key is its tenant's own: with MaxRunsPerKey 1, tenant a's
// run holding key customer-7's only slot does not hold tenant b's run of
// customer-7, whose output never names a slot; a's second run of the key
// still waits for a's first.
func TestConcurrencyKeyIsPerTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxRunsPerKey: 1})
	release := make(chan struct{})
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(userPrompt(req), "a-first") {
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
	submit := func(tenant, prompt string) *run.Output {
		t.Helper()
		out, err := e.agent.Run(ctx, prompt, agent.Background(true), agent.WithTenant(tenant), agent.WithConcurrencyKey("customer-7"))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	aFirst := submit("a", "a-first")
	if err := e.model.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	aSecond := submit("a", "a-second")
	b := submit("b", "b-first")

	// b's run completes while a's first holds the key's only slot of a.
	bCtx := kerntest.Context(t, 20*time.Second)
	out, err := e.agent.WaitRun(bCtx, b.RunID)
	if err != nil {
		pending, _ := e.agent.GetRunOutput(ctx, b.RunID)
		t.Fatalf("tenant b's run of the key did not complete while tenant a's held a's slot: %v; it reads %s %q", err, pending.Status, pending.Error)
	}
	if out.Status != run.StatusCompleted || out.Error != "" {
		t.Fatalf("tenant b's run: %s %q", out.Status, out.Error)
	}

	// Within tenant a the limit holds: a's second run has not reached the
	// model, and says why it waits.
	second, err := e.agent.GetRunOutput(ctx, aSecond.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if second.Status != run.StatusPending || !strings.Contains(second.Error, "concurrency key") {
		t.Fatalf("tenant a's second run of the key, while its first runs: %s %q", second.Status, second.Error)
	}
	for _, req := range e.model.Requests() {
		if userPrompt(req) == "a-second" {
			t.Fatal("tenant a's second run of the key reached the model while its first held the only slot")
		}
	}
	released = true
	close(release)
	for _, id := range []string{aFirst.RunID, aSecond.RunID} {
		if out := mustWait(t, e.agent, id); out.Status != run.StatusCompleted {
			t.Fatalf("run %s: %s %q", id, out.Status, out.Error)
		}
	}
}
