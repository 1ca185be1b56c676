package agent_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// Two worker processes behind PgBouncer; the one executing a run is
// killed with SIGKILL mid-stream. The other finishes the run, once, as
// attempt 2, and the rescue names the rule that found the worker dead.
//
// Behind a session pooler, and behind a transaction pooler with a direct
// URL, that is the session rule: the worker's liveness lock went with its
// session (PgBouncer's DISCARD ALL, or the direct connection closing).
// RescueAfter is 30s there, so a recovery within 10s can only be that
// rule's. Behind a transaction pooler without a direct URL there is no
// session to judge a worker by: the run is rescued when its heartbeat is
// RescueAfter old.
func TestKilledWorkerProcessThroughPgBouncer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pooler      string
		rescueAfter time.Duration
		wantRule    string        // in the run.retrying event's error
		within      time.Duration // kill → completion
	}{
		{"session", 30 * time.Second, "its Postgres session ended", 10 * time.Second},
		{"transaction+direct", 30 * time.Second, "its Postgres session ended", 10 * time.Second},
		{"transaction", 3 * time.Second, "no heartbeat for 3s", 3*time.Second + 10*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.pooler, func(t *testing.T) {
			t.Parallel()
			c := poolerCaseNamed(t, tc.pooler)
			ctx := kerntest.Context(t, 2*time.Minute)
			dbURL := kerntest.DatabaseURL(t)
			b := bouncerFor(t, dbURL, c, pgtest.BouncerConfig{})
			fake, modelURL := kerntest.ModelServer(t)
			fake.Script(scripted(
				fakellm.Reply{Content: fakellm.LoremWords(1000), Drip: 10 * time.Millisecond}, // still streaming when killed
				fakellm.Reply{Content: "The capital of France is Paris."},
			))
			var env []string
			if c.direct {
				env = append(env, workerDirectEnv+"="+dbURL)
			}
			workers := map[string]*workerProcess{
				"w1": startWorkerProcess(t, "w1", b.URL(), modelURL, tc.rescueAfter, env...),
				"w2": startWorkerProcess(t, "w2", b.URL(), modelURL, tc.rescueAfter, env...),
			}
			d := openThrough(t, ctx, kerntest.WithPoolSize(b.URL(), 4), dbURL, c)
			submitter := &agent.Agent{Name: processAgent, Model: agent.OpenAIChat{ID: "unused"}, DB: d}

			out, err := submitter.Run(ctx, "What is the capital of France?", agent.Background(true), agent.WithTimeout(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if err := fake.WaitRequests(ctx, 1); err != nil {
				t.Fatal(err)
			}
			victim := fake.Requests()[0].Model
			if workers[victim] == nil {
				t.Fatalf("first request by %q, not a worker process", victim)
			}
			waitFor(t, 10*time.Second, "some content to be streamed", func() bool {
				got, err := submitter.GetRunOutput(ctx, out.RunID)
				return err == nil && got.Content != ""
			})
			workers[victim].kill()
			killed := time.Now()

			final := mustWait(t, submitter, out.RunID)
			recovery := time.Since(killed)
			if final.Status != run.StatusCompleted || final.Content != "The capital of France is Paris." || final.Attempt != 2 {
				t.Fatalf("run after its worker was killed: %s attempt %d %q %s", final.Status, final.Attempt, final.Content, final.Error)
			}
			reqs := fake.Requests()
			if len(reqs) != 2 || reqs[1].Model == victim {
				t.Fatalf("model requests after the kill: %d, the last by %q (victim %q)", len(reqs), reqs[len(reqs)-1].Model, victim)
			}
			var terminal int
			var rescues []string
			for _, ev := range collect(t, submitter, out.RunID, 0) {
				if ev.Type.Terminal() {
					terminal++
				}
				if ev.Type == run.EventRunRetrying {
					var data struct{ Error string }
					if err := json.Unmarshal(ev.Data, &data); err != nil {
						t.Fatalf("run.retrying data %s: %v", ev.Data, err)
					}
					rescues = append(rescues, data.Error)
				}
			}
			if terminal != 1 {
				t.Fatalf("%d terminal events, want exactly 1", terminal)
			}
			if len(rescues) != 1 || !strings.Contains(rescues[0], tc.wantRule) {
				t.Fatalf("run.retrying errors %q; want one naming %q", rescues, tc.wantRule)
			}
			// Generous bounds, not a speed test: with RescueAfter at 30s the
			// bound only tells the session rule from the heartbeat rule.
			if recovery > tc.within {
				t.Fatalf("recovered %v after SIGKILL; want within %v (RescueAfter %v)", recovery, tc.within, tc.rescueAfter)
			}
			checkBouncer(t, b)
			t.Logf("recovered %v after SIGKILL (RescueAfter %v): %s", recovery.Round(time.Millisecond), tc.rescueAfter, rescues[0])
		})
	}
}
