package agent_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// userPrompt is the last user message of a model request.
func userPrompt(req fakellm.Request) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			return req.Messages[i].Content
		}
	}
	return ""
}

// countRowsAndJobs counts kern_run rows and River jobs.
func countRowsAndJobs(t *testing.T, d *db.DB) (rows, jobs int) {
	t.Helper()
	ctx := kerntest.Context(t, 10*time.Second)
	if err := d.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM kern_run), (SELECT count(*) FROM river_job)`).Scan(&rows, &jobs); err != nil {
		t.Fatal(err)
	}
	return rows, jobs
}

// 3 worker processes, MaxRunsPerKey 1, 50 runs of one key: never two of
// them at the model at once (each request arrives after the previous one
// was answered), they reach it in submit order, and a run of another key
// completes while the key's backlog is long.
func TestPerKeyLimitAcrossWorkerProcesses(t *testing.T) {
	if testing.Short() {
		// The limit itself, across a process's runs and while a run
		// waits: TestPerKeyLimitOfTwo, TestWaitingRunDoesNotHoldItsKey.
		t.Skip("3 worker processes draining 50 runs of a key: the long tier (make test-long)")
	}
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	srv, modelURL := kerntest.ModelServer(t)
	a := &agent.Agent{Name: processAgent, Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("k", modelURL), ID: "submitter"}, DB: d}
	for i := range 3 {
		startWorkerProcess(t, fmt.Sprintf("w%d", i), url, modelURL, 10*time.Second, workerMaxPerKeyEnv+"=1")
	}
	ctx := kerntest.Context(t, 2*time.Minute)
	const n = 50
	ids := make([]string, n)
	for i := range n {
		out, err := a.Run(ctx, fmt.Sprintf("one-key run %02d [fake:latency=20ms]", i), agent.Background(true), agent.WithConcurrencyKey("user-1"))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	other, err := a.Run(ctx, "other-key run", agent.Background(true), agent.WithConcurrencyKey("user-2"))
	if err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, a, other.RunID); out.Status != run.StatusCompleted {
		t.Fatalf("other key's run: %+v", out)
	}
	var left int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE concurrency_key = 'user-1' AND status IN ('pending', 'running')`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	t.Logf("when the other key's run completed, %d of the key's %d runs were still live", left, n)
	if left < n/2 {
		t.Errorf("the other key's run was held up: only %d of %d runs of the busy key were left", left, n)
	}
	pending, err := a.GetRunOutput(ctx, ids[n-1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the key's last run reads: %s %q", pending.Status, pending.Error)

	started := time.Now()
	for _, id := range ids {
		if out := mustWait(t, a, id); out.Status != run.StatusCompleted || out.Attempt != 1 {
			t.Fatalf("run %s: status %s, attempt %d", id, out.Status, out.Attempt)
		}
	}
	t.Logf("the key's backlog drained in %v", time.Since(started))

	var reqs []fakellm.Request
	for _, r := range srv.Requests() {
		if strings.HasPrefix(userPrompt(r), "one-key run") {
			reqs = append(reqs, r)
		}
	}
	if len(reqs) != n {
		t.Fatalf("%d model requests for the key, want %d", len(reqs), n)
	}
	slices.SortFunc(reqs, func(x, y fakellm.Request) int { return x.Seq - y.Seq })
	workers := map[string]int{}
	for i, r := range reqs {
		workers[r.Model]++
		if want := fmt.Sprintf("one-key run %02d", i); !strings.HasPrefix(userPrompt(r), want) {
			t.Errorf("request %d is %q: not in submit order", i, userPrompt(r))
		}
		if i > 0 && r.ReceivedAt.Before(reqs[i-1].DoneAt) {
			t.Errorf("request %d arrived %v before request %d was answered: two runs of the key live at once",
				i, reqs[i-1].DoneAt.Sub(r.ReceivedAt), i-1)
		}
	}
	t.Logf("runs of the key per worker process: %v", workers)
	// Started in submit order, by the rows too.
	rows, err := d.Pool().Query(ctx, `SELECT id FROM kern_run WHERE concurrency_key = 'user-1' ORDER BY started_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	var byStart []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		byStart = append(byStart, id)
	}
	if !slices.Equal(byStart, ids) {
		t.Errorf("runs by started_at are not in submit order")
	}
}

// A run waiting for approval holds no slot of its key: another run of the
// key completes meanwhile, and the waiting one completes once approved.
func TestWaitingRunDoesNotHoldItsKey(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{MaxRunsPerKey: 1}, 0, counted("delete", &n))
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(userPrompt(req), "ask") && toolMessages(req) == 0 {
			return fakellm.Reply{Content: "Asking. ", ToolCalls: []fakellm.ToolCall{{ID: "c1", Name: "delete", Arguments: `{}`}}}
		}
		return fakellm.Reply{Content: "finished"}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	w := submitWaiting(t, e, "ask first", agent.WithConcurrencyKey("session-1"))
	second, err := e.agent.Run(ctx, "plain", agent.Background(true), agent.WithConcurrencyKey("session-1"))
	if err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, e.agent, second.RunID); out.Status != run.StatusCompleted {
		t.Fatalf("second run of the key: %+v", out)
	}
	if err := e.agent.ApproveToolCall(ctx, w.RunID, "c1"); err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, e.agent, w.RunID); out.Status != run.StatusCompleted || n.Load() != 1 {
		t.Fatalf("approved run: %+v, tool called %d times", out, n.Load())
	}
}

// A key's limit holds within one worker too, with its runs claimed in one
// batch, and a limit of 2 lets two run at once, never three.
func TestPerKeyLimitOfTwo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxRunsPerKey: 2, MaxConcurrentRuns: 10})
	ctx := kerntest.Context(t, time.Minute)
	const n = 12
	ids := make([]string, n)
	for i := range n {
		out, err := e.agent.Run(ctx, fmt.Sprintf("two run %02d [fake:latency=30ms]", i), agent.Background(true), agent.WithConcurrencyKey("k"))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	for _, id := range ids {
		if out := mustWait(t, e.agent, id); out.Status != run.StatusCompleted {
			t.Fatalf("run %s: %+v", id, out)
		}
	}
	reqs := e.model.Requests()
	most := 0
	for _, r := range reqs {
		live := 0
		for _, o := range reqs {
			if !o.ReceivedAt.After(r.ReceivedAt) && o.DoneAt.After(r.ReceivedAt) {
				live++
			}
		}
		most = max(most, live)
	}
	if most != 2 {
		t.Errorf("at most %d runs of the key at the model at once, want 2", most)
	}
}

// Runs submitted with mixed priorities while no worker runs start in
// priority order (then submit order) under MaxConcurrentRuns 1.
func TestPriorityOrderUnderBacklog(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "prio", Model: model, DB: d}
	ctx := kerntest.Context(t, time.Minute)
	prios := []int{0, 4, 1, 3, 2, 1, 0, 4, 3, 1}
	type sub struct{ prio, seq int }
	var want []string
	var subs []sub
	for i, p := range prios {
		opts := []agent.RunOption{agent.Background(true)}
		if p != 0 {
			opts = append(opts, agent.WithPriority(p))
		}
		if _, err := a.Run(ctx, fmt.Sprintf("prio run %d", i), opts...); err != nil {
			t.Fatal(err)
		}
		if p == 0 {
			p = 2 // the default
		}
		subs = append(subs, sub{p, i})
	}
	slices.SortStableFunc(subs, func(x, y sub) int { return x.prio - y.prio })
	for _, s := range subs {
		want = append(want, fmt.Sprintf("prio run %d", s.seq))
	}
	kerntest.Worker(t, d, agent.WorkerConfig{MaxConcurrentRuns: 1}, a)
	if err := srv.WaitRequests(ctx, len(prios)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range srv.Requests() {
		got = append(got, userPrompt(r))
	}
	if !slices.Equal(got, want) {
		t.Errorf("runs reached the model in order\n%v\nwant\n%v", got, want)
	}
}

// A delayed run does not start before its time; one cancelled before it
// never reaches the model.
func TestDelayedRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)
	at := time.Now().Add(1500 * time.Millisecond)
	out, err := e.agent.Run(ctx, "later", agent.Background(true), agent.WithStartAt(at))
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := e.agent.Run(ctx, "never", agent.Background(true), agent.WithDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.agent.CancelRun(ctx, cancelled.RunID); err != nil || !ok {
		t.Fatalf("cancel: %v, %v", ok, err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCompleted || final.StartedAt == nil || final.StartedAt.Before(at) {
		t.Fatalf("delayed run: status %s, started %v, due %v", final.Status, final.StartedAt, at)
	}
	t.Logf("delayed run started %v after its time", final.StartedAt.Sub(at))
	if c := mustWait(t, e.agent, cancelled.RunID); c.Status != run.StatusCancelled || c.StartedAt != nil {
		t.Fatalf("cancelled delayed run: %+v", c)
	}
	time.Sleep(300 * time.Millisecond) // its job came due a while ago
	for _, r := range e.model.Requests() {
		if userPrompt(r) == "never" {
			t.Fatal("the cancelled delayed run reached the model")
		}
	}
	if e.model.Count() != 1 {
		t.Fatalf("%d model requests, want 1", e.model.Count())
	}
}

// WithTx: a rolled-back submit leaves no row, no job, no model call; a
// committed one runs.
func TestSubmitInTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	ctx := kerntest.Context(t, 30*time.Second)

	tx, err := e.db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.agent.Run(ctx, "rolled back", agent.Background(true), agent.WithTx(tx))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.agent.GetRunOutput(ctx, gone.RunID); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("rolled-back run: %v, want ErrNotFound", err)
	}

	tx, err = e.db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := e.agent.Run(ctx, "committed", agent.Background(true), agent.WithTx(tx), agent.WithRunID("tx-run"))
	if err != nil {
		t.Fatal(err)
	}
	// A duplicate id leaves the transaction usable.
	if _, err := e.agent.Run(ctx, "dup", agent.Background(true), agent.WithTx(tx), agent.WithRunID("tx-run")); !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("duplicate in tx: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if e.model.Count() != 0 {
		t.Fatal("a worker ran the run before its transaction committed")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, e.agent, kept.RunID); out.Status != run.StatusCompleted {
		t.Fatalf("committed run: %+v", out)
	}
	rows, jobs := countRowsAndJobs(t, e.db)
	if rows != 1 || jobs != 1 || e.model.Count() != 1 {
		t.Fatalf("%d rows, %d jobs, %d model calls; want 1 each", rows, jobs, e.model.Count())
	}
}

// Invalid operator options are refused before anything is written.
func TestOperatorOptionsRefused(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "opts", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	bg := agent.Background(true)
	for name, opts := range map[string][]agent.RunOption{
		"priority 0":           {bg, agent.WithPriority(0)},
		"priority 5":           {bg, agent.WithPriority(5)},
		"zero start time":      {bg, agent.WithStartAt(time.Time{})},
		"negative delay":       {bg, agent.WithDelay(-time.Second)},
		"nil tx":               {bg, agent.WithTx(nil)},
		"foreground tx":        {agent.WithTx(tx)},
		"foreground key":       {agent.WithConcurrencyKey("k")},
		"foreground priority":  {agent.WithPriority(1)},
		"foreground delay":     {agent.WithDelay(time.Second)},
		"empty key":            {bg, agent.WithConcurrencyKey("")},
		"long key":             {bg, agent.WithConcurrencyKey(strings.Repeat("k", 256))},
		"relative webhook":     {bg, agent.WithWebhook("/hook")},
		"ftp webhook":          {bg, agent.WithWebhook("ftp://example.com/hook")},
		"webhook without host": {bg, agent.WithWebhook("https:///hook")},
		"long webhook":         {bg, agent.WithWebhook("https://example.com/" + strings.Repeat("a", 2048))},
		"empty webhook":        {bg, agent.WithWebhook("")},
	} {
		if _, err := a.Run(ctx, "hello", opts...); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if rows, jobs := countRowsAndJobs(t, d); rows != 0 || jobs != 0 {
		t.Fatalf("%d rows and %d jobs written", rows, jobs)
	}
	// Accepted: the URL is stored for delivery.
	out, err := a.Run(ctx, "hello", bg, agent.WithWebhook("http://127.0.0.1:9/hook"), agent.WithPriority(4), agent.WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	var hook, key string
	var prio int
	if err := d.Pool().QueryRow(ctx, `SELECT r.webhook_url, r.concurrency_key, j.priority FROM kern_run r JOIN river_job j ON j.id = r.job_id WHERE r.id = $1`,
		out.RunID).Scan(&hook, &key, &prio); err != nil {
		t.Fatal(err)
	}
	if hook != "http://127.0.0.1:9/hook" || key != "k" || prio != 4 {
		t.Fatalf("stored webhook %q, key %q, priority %d", hook, key, prio)
	}
}
