package agent_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A worker process is SIGKILLed while it holds a run's OnComplete call and
// its webhook POST. Another worker process makes both again, soon after the
// kill (its liveness probe sees the dead worker's session), not after
// River's stuck-job rescue an hour later: at least once, as documented.
func TestKilledWorkerHookJobsRunElsewhere(t *testing.T) {
	t.Parallel()
	dbURL := kerntest.DatabaseURL(t)
	fake, modelURL := kerntest.ModelServer(t)
	fake.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Content: "done"} })
	submitter := submitterOn(t, dbURL)
	createCompletionsTable(t, submitter.DB)

	// The first POST is held until its sender goes away; later ones are
	// answered at once.
	var mu sync.Mutex
	var posts, delivered int
	closing := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts++
		first := posts == 1
		mu.Unlock()
		if first {
			select {
			case <-r.Context().Done():
			case <-closing:
			}
			return
		}
		mu.Lock()
		delivered++
		mu.Unlock()
	}))
	t.Cleanup(func() { close(closing); recv.Close() })
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return posts, delivered
	}
	completions := func(worker string) int {
		var n int
		if err := submitter.DB.Pool().QueryRow(kerntest.Context(t, 10*time.Second),
			`SELECT count(*) FROM test_completions WHERE worker = $1`, worker).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// RescueAfter an hour: the run's heartbeat cannot be what rescues here.
	ctx := kerntest.Context(t, 2*time.Minute)
	victim := startWorkerProcess(t, "w1", dbURL, modelURL, time.Hour, workerHooksEnv+"=hold")
	out, err := submitter.Run(ctx, "hello", agent.Background(true), agent.WithWebhook(recv.URL+"/hook"))
	if err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, submitter, out.RunID); out.Status != run.StatusCompleted {
		t.Fatalf("run: %+v", out)
	}
	defer func() {
		if !t.Failed() {
			return
		}
		p, d := counts()
		t.Logf("posts %d, delivered %d, completions w1 %d, w2 %d", p, d, completions("w1"), completions("w2"))
		rows, _ := submitter.DB.Pool().Query(ctx, `SELECT kind, state::text, attempt, coalesce(array_to_string(attempted_by, ','), ''), coalesce(array_to_string(errors, ' '), '') FROM river_job`)
		for rows.Next() {
			var k, st, by, errs string
			var at int
			_ = rows.Scan(&k, &st, &at, &by, &errs)
			t.Logf("job %s %s attempt %d by %s: %s", k, st, at, by, errs)
		}
		rows.Close()
	}()
	waitFor(t, 30*time.Second, "the first worker to call OnComplete and post the webhook", func() bool {
		p, _ := counts()
		return p == 1 && completions("w1") == 1
	})
	if p, _ := counts(); p != 1 {
		t.Fatalf("%d webhook posts before the kill, want 1", p)
	}
	startWorkerProcess(t, "w2", dbURL, modelURL, time.Hour, workerHooksEnv+"=record")
	victim.kill()

	// Well before River's hour; the deadline is no timing figure.
	waitFor(t, 30*time.Second, "the other worker to call OnComplete and deliver the webhook", func() bool {
		_, d := counts()
		return d == 1 && completions("w2") == 1
	})
	// The worker records the delivery after the receiver answered it.
	waitFor(t, 30*time.Second, "the delivery to be recorded on the run", func() bool {
		final, err := submitter.GetRunOutput(ctx, out.RunID)
		if err != nil {
			t.Fatal(err)
		}
		return final.Webhook != nil && final.Webhook.Status == "delivered"
	})
}
