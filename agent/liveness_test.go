package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A worker process with 20 runs in flight is SIGKILLed: its Postgres
// session ends with it, and the other worker has all 20 running again in
// about a second — long before RescueAfter (30 s) would have let it.
func TestKilledWorkerSessionRunsRunAgainInASecond(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("worker processes")
	}
	const rescueAfter = 30 * time.Second
	const runs = 20
	dbURL := kerntest.DatabaseURL(t)
	fake, modelURL := kerntest.ModelServer(t)
	// The model id is the worker process's name: the victim's runs stream
	// for a minute, the survivor's answer at once.
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		if req.Model == "victim" {
			return fakellm.Reply{Content: fakellm.LoremWords(3000), Drip: 20 * time.Millisecond}
		}
		return fakellm.Reply{Content: "done"}
	})
	victim := startWorkerProcess(t, "victim", dbURL, modelURL, rescueAfter)
	submitter := submitterOn(t, dbURL)
	ctx := kerntest.Context(t, 2*time.Minute)
	ids := make([]string, runs)
	for i := range ids {
		out, err := submitter.Run(ctx, "stream", agent.Background(true), agent.WithRunID(fmt.Sprintf("live-%02d", i)), agent.WithTimeout(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	if err := fake.WaitRequests(ctx, runs); err != nil {
		t.Fatal(err)
	}
	startWorkerProcess(t, "survivor", dbURL, modelURL, rescueAfter)
	victim.kill()
	killed := time.Now()

	if err := fake.WaitRequests(ctx, 2*runs); err != nil {
		t.Fatalf("the runs did not reach the model again: %v", err)
	}
	// About a second on an idle machine; what proves the session did it
	// is that it came before RescueAfter, when a stale heartbeat first
	// could: that bound holds however slow the machine.
	recovered := time.Since(killed)
	if recovered >= rescueAfter {
		t.Fatalf("all %d runs reached the survivor %v after the kill; want well before RescueAfter (%v)", runs, recovered, rescueAfter)
	}
	t.Logf("all %d runs running again %v after the SIGKILL", runs, recovered)
	for _, id := range ids {
		out := mustWait(t, submitter, id)
		if out.Status != run.StatusCompleted || out.Content != "done" || out.Attempt != 2 {
			t.Errorf("%s: %s %q attempt %d", id, out.Status, out.Content, out.Attempt)
		}
	}
}

// Postgres restarts under load: every session ends at once, the live
// workers' too. No run may be rescued from them: each run completes on
// its first execution (attempt 1, one run.started).
func TestPostgresRestartRescuesNoRunOfALiveWorker(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restarts a Postgres server; skipped in -short")
	}
	ctx := kerntest.Context(t, 3*time.Minute)
	srv, d := ownServer(t, ctx, "kern_liveness", 30)
	const runs = 40
	answer := fakellm.LoremWords(200)
	fake, model := kerntest.Model(t)
	fake.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: answer, Drip: 20 * time.Millisecond} // ~4 s: the restart comes mid-stream
	})
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	// Two workers, with a short heartbeat: a rescue by session would have
	// every chance to happen between the restart and their next renewal.
	cfg := agent.WorkerConfig{MaxConcurrentRuns: runs, HeartbeatInterval: 500 * time.Millisecond, RescueAfter: 30 * time.Second}
	kerntest.Worker(t, d, cfg, a)
	kerntest.Worker(t, d, cfg, a)
	ids := make([]string, runs)
	for i := range ids {
		out, err := a.Run(ctx, "go", agent.Background(true), agent.WithRunID(fmt.Sprintf("restart-%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = out.RunID
	}
	if err := fake.WaitRequests(ctx, runs); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := d.WaitRun(waitCtx, id)
		cancel()
		if err != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		if out.Status != run.StatusCompleted || out.Attempt != 1 || out.Content != answer {
			t.Errorf("%s after the restart: %s attempt %d %q", id, out.Status, out.Attempt, out.Error)
		}
	}
	if n := fake.Count(); n != runs {
		t.Errorf("the model got %d requests for %d runs: a run was executed again", n, runs)
	}
	// And the workers recorded their new sessions: the next death is seen.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var current int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_worker WHERE session_server_start = pg_postmaster_start_time()`).Scan(&current); err != nil {
			t.Fatal(err)
		}
		if current == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 workers recorded a session on the restarted server", current)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
