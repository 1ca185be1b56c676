package agent_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// onCommit is a pgx tracer that calls fn once, when the first INSERT or COMMIT of
// its pool has been answered.
type onCommit struct {
	once sync.Once
	fn   func()
}

func (o *onCommit) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (o *onCommit) TraceQueryEnd(_ context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if data.Err == nil && (data.CommandTag.Insert() || strings.EqualFold(data.CommandTag.String(), "COMMIT")) {
		o.once.Do(o.fn)
	}
}

// A foreground run whose caller goes away between the submit and the start
// is not stranded pending (with no job, forever): it ends cancelled, and
// Run returns promptly even with OnEvent.
func TestForegroundRunWhoseCallerLeavesBeforeItStartsEndsCancelled(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, 60*time.Second)
	callerCtx, leave := context.WithCancel(ctx)
	// The submit is the pool's first INSERT (its own transaction): the
	// caller goes away the moment it is committed, before the run can
	// start.
	d := dbWithTracer(t, ctx, url, &onCommit{fn: leave})
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}

	returned := make(chan *run.Output, 1)
	go func() {
		out, _ := a.Run(callerCtx, "hello", agent.WithRunID("left"), agent.OnEvent(func(run.Event) {}))
		returned <- out
	}()
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its caller went away")
	}
	got, err := d.GetRun(ctx, "left")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != run.StatusCancelled {
		t.Fatalf("foreground run whose caller left before it started: %s %q, want cancelled", got.Status, got.Error)
	}
	if n := srv.Count(); n != 0 {
		t.Fatalf("model called %d times", n)
	}
}

// A foreground run whose process dies while it runs is rescued: a worker
// serving its agent takes it over once its heartbeat is RescueAfter old.
// So is one whose process died between submit and start (pending, with no
// job).
func TestForegroundRunsOfADeadProcessAreRescued(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	ctx := kerntest.Context(t, 60*time.Second)
	for _, id := range []string{"died-running", "died-pending"} {
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "assistant", Input: "What is the capital of France?"}); err != nil {
			t.Fatal(err)
		}
	}
	// The dead process had claimed one of them; neither will heartbeat again.
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET status = 'running', attempt = 1, execution = 1,
		heartbeat_at = now() - interval '1 hour' WHERE id = 'died-running'`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = now() - interval '1 hour',
		heartbeat_at = now() - interval '1 hour' WHERE id = 'died-pending'`); err != nil {
		t.Fatal(err)
	}
	kerntest.Worker(t, d, agent.WorkerConfig{RescueAfter: time.Second, HeartbeatInterval: 100 * time.Millisecond}, a)
	for _, id := range []string{"died-running", "died-pending"} {
		if final := mustWait(t, a, id); final.Status != run.StatusCompleted || final.Content != "The capital of France is Paris." {
			t.Fatalf("rescued foreground run %s: %s %q %q", id, final.Status, final.Error, final.Content)
		}
	}
}
