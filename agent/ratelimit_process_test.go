package agent_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestRateLimitFleetOfThreeWorkerProcesses is the fleet test with real
// processes: three worker processes (the test binary re-executed), each
// with its own pool, batchers, cache and leases, share a budget of 60
// requests per window on a fake model that answers 429 above 60 per
// window. The model never sees more than the budget in a window and
// refuses nothing; every run completes on its first attempt. (The window
// is 3 s instead of 60 s, the test knob stored with the limit, so the
// processes read it; the model counts over 2 s, since it sees a request
// after its grant, one maybe a second later than another on a loaded
// machine.)
func TestRateLimitFleetOfThreeWorkerProcesses(t *testing.T) {
	if testing.Short() {
		// A fleet of three workers on their own DB handles (pools,
		// batchers, caches, leases) in one process: TestRateLimitFleetRequestBudget.
		t.Skip("3 worker processes: the long tier (make test-long)")
	}
	t.Parallel()
	const budget, window, runs, slack = 60, 3 * time.Second, 150, time.Second
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	ctx := kerntest.Context(t, 90*time.Second)
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: rateModel, RequestsPerMinute: budget}); err != nil {
		t.Fatal(err)
	}
	if err := d.RateLimiter(engine.Key{}).SetWindow(ctx, rateModel, window); err != nil {
		t.Fatal(err)
	}
	srv, modelURL := kerntest.ModelServer(t)
	provider := fakellm.NewRateLimiter(budget, window-slack)
	srv.Script(provider.Script(nil))
	for i := range 3 {
		startWorkerProcess(t, fmt.Sprintf("rate-worker-%d", i), url, modelURL, time.Minute, workerModelIDEnv+"="+rateModel)
	}
	submitter := &agent.Agent{Name: processAgent, Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("k", modelURL), ID: rateModel}, DB: d}
	ids := make([]string, runs)
	for i := range runs {
		out, err := submitter.Run(ctx, fmt.Sprintf("run %d", i), agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	for _, id := range ids {
		out := mustWait(t, submitter, id)
		if out.Status != run.StatusCompleted || out.Attempt != 1 {
			t.Fatalf("run %s: %s (attempt %d): %s", id, out.Status, out.Attempt, out.Error)
		}
	}
	var workers int
	if err := d.Pool().QueryRow(ctx, `SELECT count(DISTINCT worker_id) FROM kern_run`).Scan(&workers); err != nil {
		t.Fatal(err)
	}
	if workers < 2 {
		t.Fatalf("the runs were worked by %d worker process(es): not a fleet", workers)
	}
	arrivals := provider.Arrivals()
	if len(arrivals) != runs || provider.Rejected() != 0 {
		t.Fatalf("the model saw %d requests, %d refused; want %d and none", len(arrivals), provider.Rejected(), runs)
	}
	if got := fakellm.MaxInWindow(arrivals, window-slack); got > budget {
		t.Fatalf("the model saw %d requests in one window; the budget is %d", got, budget)
	}
	if span := arrivals[len(arrivals)-1].At.Sub(arrivals[0].At); span < 2*window-slack {
		t.Fatalf("%d requests at %d per %v took only %v", runs, budget, window, span)
	}
	t.Logf("150 runs worked by %d worker processes", workers)
}
