package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// The "approval" group: how fast an answered run gets going again, and what
// a run that waits costs while it waits.
//
//   - answer → tool running: ApproveToolCall called → the approved tool
//     called on the worker, for runs approved one at a time with an idle
//     worker (default WorkerConfig). It covers the answer's transaction
//     (the run back to pending with a new job), River's pickup, the claim
//     and the resume from the transcript.
//   - WaitingRuns runs waiting at once: River jobs not finished, runs the
//     worker holds, and the worker's Go heap against before they were
//     submitted (same process: the heap is the bench's, after a GC).

// approvalScript asks for the approval tool once, then answers.
func approvalScript(req fakellm.Request) fakellm.Reply {
	for _, m := range req.Messages {
		if m.Role == "tool" {
			return fakellm.Reply{Content: "Paid."}
		}
	}
	return fakellm.Reply{ToolCalls: []fakellm.ToolCall{{Name: "pay", Arguments: `{"eur":10}`}}}
}

func approval(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	env.Fake.Script(approvalScript)
	var mu sync.Mutex
	called := map[string]chan struct{}{}
	pay := agent.Tool{Name: "pay", Description: "pays", Parameters: map[string]any{"type": "object"}, NeedsApproval: true,
		Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
			mu.Lock()
			ch := called[agent.ToolCallID(ctx)]
			mu.Unlock()
			if ch != nil {
				close(ch)
			}
			return "paid", nil
		}}
	a := &agent.Agent{Name: "bench-approval", Model: env.Model, DB: d, Tools: []agent.Tool{pay}}
	w, err := agent.NewWorker(d, agent.WorkerConfig{Logger: cfg.Logger}, a)
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}()

	waitFor := func(runID string) (*run.Output, error) {
		out, err := a.WaitRun(ctx, runID)
		if err == nil && out.Status != run.StatusWaiting {
			err = fmt.Errorf("approval bench: run %s is %s, not waiting: %s", runID, out.Status, out.Error)
		}
		return out, err
	}
	var lat []time.Duration
	for range cfg.Samples {
		out, err := a.Run(ctx, "pay 10 EUR", agent.Background(true))
		if err != nil {
			return nil, err
		}
		if out, err = waitFor(out.RunID); err != nil {
			return nil, err
		}
		callID := out.Waiting[0].ID
		ch := make(chan struct{})
		mu.Lock()
		called[out.RunID+"/"+callID] = ch
		mu.Unlock()
		start := time.Now()
		if err := a.ApproveToolCall(ctx, out.RunID, callID); err != nil {
			return nil, err
		}
		select {
		case <-ch:
			lat = append(lat, time.Since(start))
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("approval bench: the approved tool of run %s was not called within 30s", out.RunID)
		}
		if final, err := a.WaitRun(ctx, out.RunID); err != nil || final.Status != run.StatusCompleted {
			return nil, fmt.Errorf("approval bench: run %s ended %v: %v", out.RunID, final, err)
		}
	}
	res := []Result{
		{"approve → tool running on a worker p50", ms(pct(lat, 50)), fmt.Sprintf("%d runs approved one at a time, idle worker, default WorkerConfig", len(lat))},
		{"approve → tool running on a worker p99", ms(pct(lat, 99)), ""},
	}

	// Many runs waiting at once.
	n := cfg.WaitingRuns
	if n <= 0 {
		return res, nil
	}
	heapBefore := heapInUse()
	ids := make([]string, n)
	var next sync.WaitGroup
	errs := make(chan error, cfg.Submitters)
	per := (n + cfg.Submitters - 1) / cfg.Submitters
	for s := range cfg.Submitters {
		next.Go(func() {
			for i := s * per; i < min(n, (s+1)*per); i++ {
				out, err := a.Run(ctx, "pay 10 EUR", agent.Background(true))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = out.RunID
			}
		})
	}
	next.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	start := time.Now()
	for {
		var waiting int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE status = 'waiting'`).Scan(&waiting); err != nil {
			return nil, err
		}
		if waiting == n+0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return nil, fmt.Errorf("approval bench: %d of %d runs waiting after 5 minutes", waiting, n)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	// River marks jobs completed in batches, a little after they return:
	// give it until the count is 0, for up to 10 s.
	var jobs int
	settled := time.Now()
	for {
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state NOT IN ('completed', 'cancelled', 'discarded')`).Scan(&jobs); err != nil {
			return nil, err
		}
		if jobs == 0 || time.Since(settled) > 10*time.Second {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	heapAfter := heapInUse()
	held, err := d.ListRuns(ctx, run.ListParams{Statuses: []run.Status{run.StatusRunning}})
	if err != nil {
		return nil, err
	}
	return append(res,
		Result{"runs waiting at once", fmt.Sprint(n), fmt.Sprintf("each asked for an approval; all waiting %.1fs after the last submit", time.Since(start).Seconds())},
		Result{"River jobs not finished while they wait", fmt.Sprint(jobs), fmt.Sprintf("available, running, retryable or scheduled; %.0f ms after all were waiting (River completes jobs in batches)", float64(time.Since(settled).Milliseconds()))},
		Result{"runs the worker holds while they wait", fmt.Sprint(len(held.Runs)), "status running"},
		Result{"worker process heap, before → while they wait", fmt.Sprintf("%s → %s", mib(int64(heapBefore)), mib(int64(heapAfter))),
			"Go heap in use after a GC, this process (worker, submitters, fake model)"},
	), nil
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
