package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// PgBouncer recycles its server connections while runs stream: a server
// older than server_lifetime, or idle longer than server_idle_timeout, is
// closed when it goes back to the pool. Two workers behind it must not
// notice: every run completes at its first attempt, the model is asked once
// per run, no run is rescued or handed back, and PgBouncer is unharmed.
//
// Behind a transaction pooler a server goes back to the pool after every
// transaction, so the recycling hits kern all the time. Behind a session
// pooler it goes back only when a client disconnects, so there the pool's
// connections live as long as a server (pool_max_conn_lifetime), while
// the workers' liveness sessions live on.
// Without a direct URL the workers have no session: heartbeats (RescueAfter
// at its default) must keep live workers from being taken for dead.
//
// -short: 40 runs at a 1s lifetime. The long tier: 200 runs, and 200 more
// at a 4s lifetime.
func TestPgBouncerServerChurn(t *testing.T) {
	t.Parallel()
	runs, lifetimes := 200, []time.Duration{time.Second, 4 * time.Second}
	if testing.Short() {
		runs, lifetimes = 40, lifetimes[:1]
	}
	for _, lifetime := range lifetimes {
		for _, pooler := range []string{"session", "transaction+direct", "transaction"} {
			t.Run(fmt.Sprintf("%s/%v", pooler, lifetime), func(t *testing.T) {
				t.Parallel()
				churn(t, poolerCaseNamed(t, pooler), lifetime, runs)
			})
		}
	}
}

// churn submits runs through a PgBouncer of c's mode that recycles its
// servers after lifetime, to two workers, and checks each ran once.
func churn(t *testing.T, c poolerCase, lifetime time.Duration, runs int) {
	ctx := kerntest.Context(t, 3*time.Minute)
	dbURL := kerntest.DatabaseURL(t)
	b := bouncerFor(t, dbURL, c, pgtest.BouncerConfig{
		ServerLifetime: lifetime, ServerIdleTimeout: lifetime,
	})
	fake, model := kerntest.Model(t)
	// Each answer streams for about 600ms, so runs are in flight while
	// servers are recycled under them.
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: "answer to " + req.LastUserMessage() + ": " + fakellm.LoremWords(19), Drip: 30 * time.Millisecond}
	})
	// Behind a session pooler a server goes back to the pool only when its
	// client disconnects: pgxpool's connections live an hour unless told
	// otherwise. Told to live a second, as an application's may, they
	// give PgBouncer servers to reset (DISCARD ALL) and recycle.
	pooled := kerntest.WithPoolSize(b.URL(), kerntest.TestPoolSize)
	if c.mode == pgtest.PoolSession {
		pooled += "&pool_max_conn_lifetime=" + lifetime.String()
	}
	var agents []*agent.Agent
	for range 2 {
		d := openThrough(t, ctx, pooled, dbURL, c)
		a := &agent.Agent{Name: "assistant", Model: model, DB: d}
		kerntest.Worker(t, d, agent.WorkerConfig{}, a)
		agents = append(agents, a)
	}
	a := agents[0]

	// Half the runs, then the first recycled server, then the other half:
	// runs are submitted, claimed and finished on both sides of the
	// recycling.
	submit(t, ctx, agents, 0, runs/2)
	waitFor(t, 30*time.Second, "PgBouncer to recycle a server connection", func() bool {
		return recycledServers(b.Log()) > 0
	})
	submit(t, ctx, agents, runs/2, runs)
	for i := range runs {
		id := fmt.Sprintf("r%03d", i)
		out := mustWait(t, a, id)
		if out.Status != run.StatusCompleted || !strings.HasPrefix(out.Content, "answer to "+id+": ") || out.Attempt != 1 {
			t.Fatalf("run %s: %s at attempt %d, %q %s", id, out.Status, out.Attempt, out.Content, out.Error)
		}
	}
	if n := fake.Count(); n != runs {
		t.Errorf("%d model requests for %d runs; want one each", n, runs)
	}
	var handedOn int
	if err := a.DB.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_event
		WHERE type IN ('run.retrying', 'run.released')`).Scan(&handedOn); err != nil {
		t.Fatal(err)
	}
	if handedOn != 0 {
		t.Errorf("%d run.retrying or run.released events; want none", handedOn)
	}
	recycled := recycledServers(b.Log())
	checkBouncer(t, b)
	t.Logf("%d runs, %d server connections recycled", runs, recycled)
}

// submit submits runs from to to-1 ("r000" …), alternately through each
// agent, from a few goroutines, so that submits overlap each other and
// the recycling.
func submit(t *testing.T, ctx context.Context, agents []*agent.Agent, from, to int) {
	t.Helper()
	const submitters = 4
	errs := make(chan error, submitters)
	var wg sync.WaitGroup
	for s := range submitters {
		wg.Go(func() {
			for i := from + s; i < to; i += submitters {
				id := fmt.Sprintf("r%03d", i)
				if _, err := agents[i%len(agents)].Run(ctx, id, agent.Background(true), agent.WithRunID(id)); err != nil {
					errs <- fmt.Errorf("submit %s: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// recycledServers counts the server connections PgBouncer's log says it
// closed for their age or idleness.
func recycledServers(log string) int {
	return strings.Count(log, "server lifetime over") + strings.Count(log, "server idle timeout")
}
