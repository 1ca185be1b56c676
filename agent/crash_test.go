package agent_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Two worker processes; the one executing a run is killed with SIGKILL in
// the middle of it. The other must finish the run — once — within
// RescueAfter and a few seconds, not after the run's timeout.
func TestKilledWorkerProcessRunCompletesElsewhere(t *testing.T) {
	t.Parallel()
	const rescueAfter = 2 * time.Second
	dbURL := kerntest.DatabaseURL(t)
	fake, modelURL := kerntest.ModelServer(t)
	fake.Script(scripted(
		fakellm.Reply{Content: fakellm.LoremWords(1000), Drip: 10 * time.Millisecond}, // still streaming when killed
		fakellm.Reply{Content: "The capital of France is Paris."},
	))
	workers := map[string]*workerProcess{
		"w1": startWorkerProcess(t, "w1", dbURL, modelURL, rescueAfter),
		"w2": startWorkerProcess(t, "w2", dbURL, modelURL, rescueAfter),
	}
	submitter := submitterOn(t, dbURL)
	ctx := kerntest.Context(t, time.Minute)

	out, err := submitter.Run(ctx, "What is the capital of France?", agent.Background(true), agent.WithTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	victim := fake.Requests()[0].Model
	waitFor(t, 10*time.Second, "some content to be streamed", func() bool {
		got, err := submitter.GetRunOutput(ctx, out.RunID)
		return err == nil && got.Content != ""
	})
	workers[victim].kill()
	killed := time.Now()

	final := mustWait(t, submitter, out.RunID)
	recovery := time.Since(killed)
	if final.Status != run.StatusCompleted || final.Content != "The capital of France is Paris." || final.Attempt != 2 {
		t.Fatalf("run after its worker was killed: %+v", final)
	}
	if recovery > rescueAfter+5*time.Second {
		t.Fatalf("recovered after %v, want within RescueAfter (%v) + 5s", recovery, rescueAfter)
	}
	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[1].Model == victim {
		t.Fatalf("model requests after the kill: %d, second by %q (victim %q)", len(reqs), reqs[len(reqs)-1].Model, victim)
	}
	completions := 0
	for _, ev := range collect(t, submitter, out.RunID, 0) {
		if ev.Type.Terminal() {
			completions++
		}
	}
	if completions != 1 {
		t.Fatalf("%d terminal events, want exactly 1", completions)
	}
	t.Logf("recovered %v after SIGKILL (RescueAfter %v)", recovery.Round(time.Millisecond), rescueAfter)
}

// submitterOn is an agent on dbURL that only submits and reads.
func submitterOn(t *testing.T, dbURL string) *agent.Agent {
	t.Helper()
	d := kerntest.Open(t, dbURL)
	return &agent.Agent{Name: processAgent, Model: agent.OpenAIChat{ID: "unused"}, DB: d}
}
