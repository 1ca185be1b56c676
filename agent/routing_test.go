package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// recordingModel wraps a model and notes which worker called it.
type recordingModel struct {
	agent.Model
	worker string
	calls  *sync.Map // run prompt → worker(s)
}

func (m *recordingModel) Stream(ctx context.Context, req *agent.ModelRequest, onDelta func(string)) (*agent.ModelResponse, error) {
	prompt := req.Messages[len(req.Messages)-1].Content
	if prev, dup := m.calls.LoadOrStore(prompt, m.worker); dup {
		m.calls.Store(prompt, prev.(string)+","+m.worker)
	}
	return m.Model.Stream(ctx, req, onDelta)
}

// Workers that serve different agents never fail each other's runs: one
// worker per agent, one with both, 200 runs of three agents — all complete,
// each on a worker that serves its agent.
func TestRunsReachOnlyWorkersThatServeTheirAgent(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, base := kerntest.Model(t)
	ctx := kerntest.Context(t, 90*time.Second)
	var calls sync.Map
	mk := func(name, worker string) *agent.Agent {
		return &agent.Agent{Name: name, Model: &recordingModel{Model: base, worker: worker, calls: &calls}, DB: d}
	}
	fast := agent.WorkerConfig{FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}
	kerntest.Worker(t, d, fast, mk("assistant", "w1"))
	kerntest.Worker(t, d, fast, mk("writer", "w2"))
	both := fast
	both.MaxConcurrentRuns = 2
	kerntest.Worker(t, d, both, mk("writer", "w3"), mk("editor", "w3"))

	serves := map[string]string{"assistant": "w1", "writer": "w2 w3", "editor": "w3"}
	submit := map[string]*agent.Agent{"assistant": mk("assistant", "-"), "writer": mk("writer", "-"), "editor": mk("editor", "-")}
	names := []string{"assistant", "writer", "editor"}
	ids := make([]string, 200)
	for i := range ids {
		name := names[i%3]
		out, err := submit[name].Run(ctx, fmt.Sprintf("run %d of %s [fake:drip=1ms]", i, name), agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	for i, id := range ids {
		final := mustWait(t, submit[names[i%3]], id)
		if final.Status != run.StatusCompleted {
			t.Fatalf("run %d of %s: %s %q", i, names[i%3], final.Status, final.Error)
		}
	}
	calls.Range(func(k, v any) bool {
		prompt, worker := k.(string), v.(string)
		agentName := strings.Fields(prompt)[3]
		if strings.Contains(worker, ",") || !strings.Contains(serves[agentName], worker) {
			t.Errorf("%q was executed by %s; %s is served by %s", prompt, worker, agentName, serves[agentName])
		}
		return true
	})
}

// A run of an agent no live worker serves waits, visibly: it stays pending
// (never failed by a worker that cannot run it) and says why, until a
// worker for its agent starts.
func TestRunOfAnAgentNoWorkerServesWaitsVisibly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	stranger := &agent.Agent{Name: "stranger", Model: e.agent.Model, DB: e.db}
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := stranger.Run(ctx, "hello", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	got, err := stranger.GetRunOutput(ctx, out.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != run.StatusPending || !strings.Contains(got.Error, `no running worker serves agent "stranger"`) {
		t.Fatalf("run of an agent nobody serves: %s %q", got.Status, got.Error)
	}
	kerntest.Worker(t, e.db, agent.WorkerConfig{}, stranger)
	if final := mustWait(t, stranger, out.RunID); final.Status != run.StatusCompleted || final.Error != "" {
		t.Fatalf("once a worker serves it: %s %q", final.Status, final.Error)
	}
}

// MaxConcurrentRuns is a worker's total across its agents.
func TestMaxConcurrentRunsIsTheTotalAcrossAgents(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, base := kerntest.Model(t)
	ctx := kerntest.Context(t, 60*time.Second)
	var running, peak atomic.Int32
	gate := make(chan struct{})
	models := make([]*gatedModel, 3)
	agents := make([]*agent.Agent, 3)
	for i := range agents {
		models[i] = &gatedModel{Model: base, running: &running, peak: &peak, gate: gate}
		agents[i] = &agent.Agent{Name: fmt.Sprintf("agent-%d", i), Model: models[i], DB: d}
	}
	kerntest.Worker(t, d, agent.WorkerConfig{MaxConcurrentRuns: 2, FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond}, agents...)
	var ids []string
	for i := range 12 {
		out, err := agents[i%3].Run(ctx, "hello", agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.RunID)
	}
	waitFor(t, 20*time.Second, "two runs executing", func() bool { return running.Load() == 2 })
	close(gate)
	for i, id := range ids {
		if final := mustWait(t, agents[i%3], id); final.Status != run.StatusCompleted {
			t.Fatalf("run %d: %s %q", i, final.Status, final.Error)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak runs executing at once: %d, want MaxConcurrentRuns = 2", p)
	}
}

// gatedModel holds every call until gate closes, counting calls in flight.
type gatedModel struct {
	agent.Model
	running, peak *atomic.Int32
	gate          chan struct{}
}

func (m *gatedModel) Stream(ctx context.Context, req *agent.ModelRequest, onDelta func(string)) (*agent.ModelResponse, error) {
	n := m.running.Add(1)
	defer m.running.Add(-1)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
	select {
	case <-m.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return m.Model.Stream(ctx, req, onDelta)
}
