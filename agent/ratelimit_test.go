package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// rateFleet is a database with a rate-limited model "m" and n workers, each
// on a DB handle (pool, batchers, cache) of its own, as separate processes
// would be, all serving agent "assistant" on one fake model server.
type rateFleet struct {
	url    string
	db     *db.DB
	srv    *fakellm.Server
	agents []*agent.Agent
}

const rateModel = "m"

func newRateFleet(t *testing.T, n int, limit run.RateLimit, window time.Duration, cfg agent.WorkerConfig) *rateFleet {
	t.Helper()
	url := kerntest.DatabaseURL(t)
	f := &rateFleet{url: url, db: kerntest.Open(t, url)}
	ctx := kerntest.Context(t, 10*time.Second)
	limit.Model = rateModel
	if err := f.db.SetRateLimit(ctx, limit); err != nil {
		t.Fatal(err)
	}
	if err := f.db.RateLimiter(engine.Key{}).SetWindow(ctx, rateModel, window); err != nil {
		t.Fatal(err)
	}
	srv, modelURL := kerntest.ModelServer(t)
	f.srv = srv
	for range n {
		d := kerntest.Open(t, url)
		a := &agent.Agent{Name: "assistant", Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("k", modelURL), ID: rateModel}, DB: d}
		f.agents = append(f.agents, a)
		kerntest.Worker(t, d, cfg, a)
	}
	return f
}

func (f *rateFleet) submit(t *testing.T, prompt string, opts ...agent.RunOption) string {
	t.Helper()
	out, err := f.agents[0].Run(context.Background(), prompt, append([]agent.RunOption{agent.Background(true)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out.RunID
}

// throttledEvents are a run's run.throttled events' data.
func throttledEvents(t *testing.T, d *db.DB, runID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for ev, err := range d.Events(kerntest.Context(t, 10*time.Second), runID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventRunThrottled {
			var m map[string]any
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		if ev.Type.Terminal() {
			break
		}
	}
	return out
}

// TestRateLimitFleetRequestBudget: three workers share a budget of 60
// requests per window; the model answers 429 above 60 per window. The
// model never sees more than the budget in a window, no request is
// refused, every run completes on its first attempt, and a run that had to
// wait says so with run.throttled. The window is 3 s instead of 60 s (the
// test knob); the fake model counts over 2 s, since it counts requests as
// they arrive, after their grant: a loaded machine may delay one request
// by up to a second more than another without failing the test.
func TestRateLimitFleetRequestBudget(t *testing.T) {
	const budget, window, runs, slack = 60, 3 * time.Second, 150, time.Second
	f := newRateFleet(t, 3, run.RateLimit{RequestsPerMinute: budget}, window, agent.WorkerConfig{MaxConcurrentRuns: 20})
	provider := fakellm.NewRateLimiter(budget, window-slack)
	f.srv.Script(provider.Script(nil))

	ids := make([]string, runs)
	for i := range runs {
		ids[i] = f.submit(t, fmt.Sprintf("run %d", i))
	}
	throttled := 0
	for _, id := range ids {
		out := mustWait(t, f.agents[0], id)
		if out.Status != run.StatusCompleted || out.Attempt != 1 {
			t.Fatalf("run %s: %s (attempt %d): %s", id, out.Status, out.Attempt, out.Error)
		}
		if ev := throttledEvents(t, f.db, id); len(ev) > 0 {
			throttled++
			if ev[0]["model"] != rateModel || ev[0]["wait_ms"].(float64) <= 0 {
				t.Fatalf("run.throttled = %v", ev[0])
			}
		}
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
	if throttled < runs-2*budget {
		t.Fatalf("%d runs were throttled, want at least %d", throttled, runs-2*budget)
	}
}

// TestRateLimitPriorityOrder: runs waiting for budget get it by priority,
// then submit order, whichever worker holds them. The model is paused
// while 6 runs of priority 4 and then 6 of priority 1 come to wait; once
// the pause ends, 5 per window go, priority 1 first.
func TestRateLimitPriorityOrder(t *testing.T) {
	f := newRateFleet(t, 3, run.RateLimit{RequestsPerMinute: 5}, 1500*time.Millisecond, agent.WorkerConfig{MaxConcurrentRuns: 10})
	provider := fakellm.NewRateLimiter(0, time.Second)
	f.srv.Script(provider.Script(nil))
	ctx := kerntest.Context(t, 30*time.Second)
	if err := f.db.RateLimiter(engine.Key{}).Pause(ctx, rateModel, time.Minute); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 6 {
		ids = append(ids, f.submit(t, fmt.Sprintf("low %d", i), agent.WithPriority(4)))
	}
	for i := range 6 {
		ids = append(ids, f.submit(t, fmt.Sprintf("high %d", i), agent.WithPriority(1)))
	}
	// A run's place in the queue comes first, then (another statement) its
	// run.throttled and the Error saying why: wait for both, not the first.
	waitFor(t, 20*time.Second, "12 runs waiting for the rate limit, saying so", func() bool {
		var n int
		_ = f.db.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_rate_waiter`).Scan(&n)
		out, err := f.db.GetRun(ctx, ids[0])
		return n == 12 && err == nil && strings.Contains(out.Error, "waits for the rate limit")
	})
	out, err := f.db.GetRun(ctx, ids[0])
	if err != nil || out.Status != run.StatusRunning || !strings.Contains(out.Error, "waits for the rate limit of model m") {
		t.Fatalf("a waiting run: %v, %+v", err, out)
	}
	if _, err := f.db.Pool().Exec(ctx, `UPDATE kern_rate_limit SET paused_until = clock_timestamp()`); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if out := mustWait(t, f.agents[0], id); out.Status != run.StatusCompleted || out.Attempt != 1 || out.Error != "" {
			t.Fatalf("run %s: %s (attempt %d): %q", id, out.Status, out.Attempt, out.Error)
		}
	}
	arrivals := provider.Arrivals()
	for i, a := range arrivals {
		high := strings.HasPrefix(a.Prompt, "high")
		if (i < 6) != high {
			var order []string
			for _, a := range arrivals {
				order = append(order, a.Prompt)
			}
			t.Fatalf("the model was asked in the order %q; want the 6 high-priority runs first", order)
		}
	}
	// Within a priority, submit order: the first window's 5 grants (which
	// reach the model together, in any order) are the 5 oldest.
	for _, a := range arrivals[:5] {
		if a.Prompt == "high 5" {
			t.Fatalf("the newest high-priority run went in the first window, before an older one")
		}
	}
}

// TestRateLimitTokenBudget: a token budget counts what the model reported,
// not the estimate: the fake model reports about 60 tokens a call for a
// prompt estimated at a few, and a budget of 150 per window lets only 2 or 3
// calls start per window. Two workers, one run at a time each: at most one
// call in flight beyond what the reconciled window allows. Calls are
// counted over the window less a second: a request's arrival, after its
// grant, may be delayed that much more than another's on a loaded machine.
func TestRateLimitTokenBudget(t *testing.T) {
	const budget, window, slack = 150, 3 * time.Second, time.Second
	f := newRateFleet(t, 2, run.RateLimit{TokensPerMinute: budget}, window, agent.WorkerConfig{MaxConcurrentRuns: 1})
	provider := fakellm.NewRateLimiter(0, window)
	f.srv.Script(provider.Script(func(req fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(50)}
	}))
	var ids []string
	for i := range 6 {
		ids = append(ids, f.submit(t, fmt.Sprintf("tokens %d", i)))
	}
	perCall := 0
	for _, id := range ids {
		out := mustWait(t, f.agents[0], id)
		if out.Status != run.StatusCompleted || out.Attempt != 1 {
			t.Fatalf("run %s: %s: %s", id, out.Status, out.Error)
		}
		perCall = max(perCall, out.Metrics.TotalTokens)
	}
	if perCall < 40 {
		t.Fatalf("the fake reported %d tokens a call; the test needs more", perCall)
	}
	arrivals := provider.Arrivals()
	// Calls per window: the reconciled budget allows budget/perCall, plus
	// one in flight whose usage was not known yet.
	if got, most := fakellm.MaxInWindow(arrivals, window-slack), budget/perCall+2; got > most {
		t.Fatalf("%d calls of %d tokens started in one window of a %d-token budget", got, perCall, budget)
	}
	// The grants still in the window count the reported usage.
	rows, err := f.db.Pool().Query(context.Background(), `SELECT tokens FROM kern_rate_grant`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 40 {
			t.Fatalf("a grant counts %d tokens, the estimate, not the usage reported", n)
		}
	}
}

// TestRateLimitPauseOn429: a 429 with Retry-After pauses the model for the
// whole fleet: the run that got it asks again after the pause within the
// same attempt, and the other workers' runs do not reach the model before
// the pause ends. Runs waiting longer than their timeout still complete:
// the timeout does not run while a run is throttled. The pause (3 s) is
// longer than the runs' timeout (2 s), which still leaves a loaded machine
// seconds for a run's own work.
func TestRateLimitPauseOn429(t *testing.T) {
	f := newRateFleet(t, 3, run.RateLimit{RequestsPerMinute: 1000}, time.Minute, agent.WorkerConfig{MaxConcurrentRuns: 5})
	var calls atomic.Int64
	var mu sync.Mutex
	var at []time.Time
	f.srv.Script(func(req fakellm.Request) fakellm.Reply {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if calls.Add(1) == 1 {
			return fakellm.Reply{Status: 429, RetryAfter: "3", ErrorMessage: "slow down"}
		}
		return fakellm.DefaultReply(req)
	})
	first := f.submit(t, "first", agent.WithTimeout(2*time.Second))
	waitFor(t, 10*time.Second, "the 429", func() bool { return calls.Load() >= 1 })
	// The pause counts from when the worker that got the 429 records it, a
	// moment after the fake model answered: a run submitted before that may
	// reach the model, as it would in production. Submit the others after.
	waitFor(t, 10*time.Second, "the pause to be recorded", func() bool {
		var paused bool
		err := f.db.Pool().QueryRow(context.Background(),
			"SELECT coalesce(bool_or(paused_until > clock_timestamp()), false) FROM kern_rate_limit").Scan(&paused)
		return err == nil && paused
	})
	var others []string
	for i := range 6 {
		others = append(others, f.submit(t, fmt.Sprintf("other %d", i), agent.WithTimeout(2*time.Second)))
	}
	for _, id := range append([]string{first}, others...) {
		out := mustWait(t, f.agents[0], id)
		if out.Status != run.StatusCompleted || out.Attempt != 1 {
			t.Fatalf("run %s: %s (attempt %d): %s", id, out.Status, out.Attempt, out.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 8 {
		t.Fatalf("the model was asked %d times, want 8 (one 429, then each run once)", len(at))
	}
	for i, a := range at[1:] {
		if d := a.Sub(at[0]); d < 2900*time.Millisecond {
			t.Fatalf("request %d came %v after the 429; the pause was 3 s", i+2, d)
		}
	}
	paused := 0
	for _, id := range others {
		if ev := throttledEvents(t, f.db, id); len(ev) > 0 {
			paused++
		}
	}
	if paused == 0 {
		t.Fatal("no other run was throttled by the pause")
	}
}

// TestRateLimitNotBindingLeases: with a budget far from binding, a worker
// spends leases of it (a grant row per lease, not per call), no run waits,
// and once the last lease's life is over the window counts exactly the
// calls made and the tokens the model reported (unspent lease given back,
// each call's usage reconciled with a later statement, not one per call).
func TestRateLimitNotBindingLeases(t *testing.T) {
	const runs = 60
	f := newRateFleet(t, 1, run.RateLimit{RequestsPerMinute: 100_000, TokensPerMinute: 10_000_000}, time.Minute,
		agent.WorkerConfig{MaxConcurrentRuns: 10})
	var ids []string
	for i := range runs {
		ids = append(ids, f.submit(t, fmt.Sprintf("lease %d", i)))
	}
	tokens := 0
	for _, id := range ids {
		out := mustWait(t, f.agents[0], id)
		if out.Status != run.StatusCompleted || out.Attempt != 1 || out.Metrics.TotalTokens == 0 {
			t.Fatalf("run %s: %s (attempt %d, %d tokens): %s", id, out.Status, out.Attempt, out.Metrics.TotalTokens, out.Error)
		}
		if ev := throttledEvents(t, f.db, id); len(ev) > 0 {
			t.Fatalf("run %s was throttled by a budget far from binding: %v", id, ev)
		}
		tokens += out.Metrics.TotalTokens
	}
	ctx := kerntest.Context(t, 10*time.Second)
	var grants int
	if err := f.db.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_rate_grant`).Scan(&grants); err != nil {
		t.Fatal(err)
	}
	if grants > runs/3 {
		t.Fatalf("%d grant rows for %d calls; want a lease's row for many calls", grants, runs)
	}
	var requests, used int
	waitFor(t, 5*time.Second, "the window to count every call and the usage reported", func() bool {
		_ = f.db.Pool().QueryRow(ctx, `SELECT requests_used, tokens_used FROM kern_rate_limit WHERE model = $1`, rateModel).Scan(&requests, &used)
		return requests == runs && used == tokens
	})
}
