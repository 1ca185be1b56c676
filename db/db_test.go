package db_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

func submit(t *testing.T, d *db.DB, id string) *run.Output {
	t.Helper()
	out, err := d.SubmitRun(context.Background(), db.SubmitParams{RunID: id, AgentName: "a", Input: "hello"})
	if err != nil {
		t.Fatalf("submit %s: %v", id, err)
	}
	return out
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, time.Minute)
	url := pgtest.NewDatabase(t)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			d, err := db.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer d.Close()
			errs[i] = d.Migrate(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent migrate %d: %v", i, err)
		}
	}

	d, err := db.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	var tables int
	err = d.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename IN ('kern_run', 'kern_run_cancel', 'river_job')`).Scan(&tables)
	if err != nil || tables != 3 {
		t.Fatalf("tables after migrate: %d, %v; want 3", tables, err)
	}
}

func TestSubmitAndGet(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := d.SubmitRun(ctx, db.SubmitParams{
		RunID: "r1", SessionID: "s1", AgentName: "a", Name: "n", Input: "hi",
		Metadata: map[string]any{"quote": `it's "x"`, "n": 1.5}, Timeout: time.Minute, Enqueue: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != run.StatusPending || out.Attempt != 0 || out.StartedAt != nil {
		t.Fatalf("submitted run: %+v", out)
	}
	got, err := d.GetRun(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.SessionID != "s1" || got.Name != "n" || got.Input != "hi" || got.Timeout != time.Minute ||
		got.Metadata["quote"] != `it's "x"` || got.Metadata["n"] != 1.5 {
		t.Fatalf("got %+v", got)
	}
	var jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'run_id' = 'r1'`).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("river jobs for r1: %d, %v", jobs, err)
	}
}

func TestGetUnknownRun(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, err := d.GetRun(context.Background(), "nope")
	if !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("err = %v, want run.ErrNotFound", err)
	}
	_, err = d.WaitRun(context.Background(), "nope")
	if !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("WaitRun err = %v, want run.ErrNotFound", err)
	}
}

func TestDuplicateRunID(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "dup")

	_, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "dup", AgentName: "other", Input: "second", Enqueue: true})
	if !errors.Is(err, run.ErrAlreadyExists) {
		t.Fatalf("err = %v, want run.ErrAlreadyExists", err)
	}
	got, err := d.GetRun(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	if got.Input != "hello" || got.AgentName != "a" {
		t.Fatalf("first run was changed: %+v", got)
	}
	var jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs); err != nil || jobs != 0 {
		t.Fatalf("the failed submit left %d jobs (%v)", jobs, err)
	}
}

func TestSubmitRejectsBadInput(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	cases := map[string]db.SubmitParams{
		"empty prompt":   {RunID: "x", AgentName: "a", Input: "  "},
		"empty id":       {RunID: "", AgentName: "a", Input: "hi"},
		"long id":        {RunID: string(make([]byte, 300)), AgentName: "a", Input: "hi"},
		"no agent":       {RunID: "x", Input: "hi"},
		"nul in prompt":  {RunID: "x", AgentName: "a", Input: "a\x00b"},
		"bad metadata":   {RunID: "x", AgentName: "a", Input: "hi", Metadata: map[string]any{"f": func() {}}},
		"negative limit": {RunID: "x", AgentName: "a", Input: "hi", Timeout: -time.Second},
	}
	for name, p := range cases {
		if _, err := d.SubmitRun(ctx, p); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want run.ErrInvalidArgument", name, err)
		}
	}
	var n int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad submits wrote %d runs (%v)", n, err)
	}
}

func TestCancelStates(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)

	// pending → cancelled
	submit(t, d, "pending")
	if ok, err := d.CancelRun(ctx, "pending"); err != nil || !ok {
		t.Fatalf("cancel pending = %v, %v; want true", ok, err)
	}
	if got, _ := d.GetRun(ctx, "pending"); got.Status != run.StatusCancelled || got.FinishedAt == nil {
		t.Fatalf("pending run after cancel: %+v", got)
	}
	// idempotent
	if ok, err := d.CancelRun(ctx, "pending"); err != nil || !ok {
		t.Fatalf("second cancel = %v, %v; want true", ok, err)
	}

	// completed → false, nothing changes
	submit(t, d, "done")
	if _, err := ex(d).StartRun(ctx, "done", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "done", 1, engine.Finish{Status: run.StatusCompleted, Tail: "answer"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.CancelRun(ctx, "done"); err != nil || ok {
		t.Fatalf("cancel completed = %v, %v; want false", ok, err)
	}
	got, _ := d.GetRun(ctx, "done")
	if got.Status != run.StatusCompleted || got.Content != "answer" {
		t.Fatalf("completed run changed by cancel: %+v", got)
	}
	var requests int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_cancel WHERE run_id = 'done'`).Scan(&requests); err != nil || requests != 0 {
		t.Fatalf("cancel of a finished run left %d requests (%v)", requests, err)
	}

	// running → cancelled; the worker's late finish is refused
	submit(t, d, "running")
	if _, err := ex(d).StartRun(ctx, "running", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).AppendContent(ctx, "running", 1, "part"); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.CancelRun(ctx, "running"); err != nil || !ok {
		t.Fatalf("cancel running = %v, %v; want true", ok, err)
	}
	err := ex(d).FinishRun(ctx, "running", 1, engine.Finish{Status: run.StatusCompleted, Tail: " and more"})
	if !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("late finish err = %v, want run.ErrNotRunning", err)
	}
	got, _ = d.GetRun(ctx, "running")
	if got.Status != run.StatusCancelled || got.Content != "part" {
		t.Fatalf("cancelled run: status %s content %q", got.Status, got.Content)
	}
}

func TestCancelBeforeSubmit(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)

	if ok, err := d.CancelRun(ctx, "future"); err != nil || !ok {
		t.Fatalf("cancel of a future run = %v, %v; want true", ok, err)
	}
	out := submit(t, d, "future")
	if out.Status != run.StatusPending {
		t.Fatalf("submitted status %s", out.Status)
	}
	started, err := ex(d).StartRun(ctx, "future", nil)
	if err != nil {
		t.Fatal(err)
	}
	if started.Status != run.StatusCancelled {
		t.Fatalf("start of a pre-cancelled run gave %s, want cancelled", started.Status)
	}
}

func TestAttemptFencing(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "fenced")
	first, err := ex(d).StartRun(ctx, "fenced", nil)
	if err != nil || first.Attempt != 1 {
		t.Fatalf("first start: %+v, %v", first, err)
	}
	if _, err := ex(d).StartRun(ctx, "fenced", nil); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("second start of a running run: %v, want run.ErrNotRunning", err)
	}
	if err := ex(d).RetryRun(ctx, "fenced", 1, "HTTP 503", time.Second); err != nil {
		t.Fatal(err)
	}
	pending, _ := d.GetRun(ctx, "fenced")
	if pending.Status != run.StatusPending || pending.Error != "HTTP 503" || pending.Attempt != 1 {
		t.Fatalf("run waiting for a retry: %+v", pending)
	}
	second, err := ex(d).StartRun(ctx, "fenced", nil)
	if err != nil || second.Attempt != 2 || second.Error != "" {
		t.Fatalf("second attempt: %+v, %v", second, err)
	}
	// Attempt 1 is a zombie now: every write of it is refused.
	if err := ex(d).AppendContent(ctx, "fenced", 1, "zombie"); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("zombie append: %v, want run.ErrNotRunning", err)
	}
	if err := ex(d).Heartbeat(ctx, "fenced", 1); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("zombie heartbeat: %v, want run.ErrNotRunning", err)
	}
	if err := ex(d).FinishRun(ctx, "fenced", 1, engine.Finish{Status: run.StatusCompleted}); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("zombie finish: %v, want run.ErrNotRunning", err)
	}
	if err := ex(d).FinishRun(ctx, "fenced", 2, engine.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	got, _ := d.GetRun(ctx, "fenced")
	if got.Status != run.StatusCompleted || got.Content != "ok" || got.Attempt != 2 {
		t.Fatalf("got %+v", got)
	}
}

// A job may only start its own run: after a rescue re-queued the run with a
// new job, the old job (River retries it eventually) must not start it.
func TestStaleJobCannotStartRun(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "jobbed", AgentName: "a", Input: "x", Enqueue: true})
	if err != nil {
		t.Fatal(err)
	}
	var jobID int64
	if err := d.Pool().QueryRow(ctx, `SELECT job_id FROM kern_run WHERE id = $1`, out.RunID).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	other := jobID + 1000
	if _, err := ex(d).StartRun(ctx, "jobbed", &other); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("start by a foreign job: %v, want run.ErrNotRunning", err)
	}
	if _, err := ex(d).StartRun(ctx, "jobbed", nil); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("foreground start of a background run: %v, want run.ErrNotRunning", err)
	}
	if _, err := ex(d).StartRun(ctx, "jobbed", &jobID); err != nil {
		t.Fatalf("start by its own job: %v", err)
	}
}

// A run whose worker stopped heartbeating is handed to another worker with a
// new job, or ended as error once out of attempts.
func TestRescueStale(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for _, id := range []string{"stale", "fresh", "spent"} {
		submit(t, d, id)
		if _, err := ex(d).StartRun(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET heartbeat_at = now() - interval '1 minute' WHERE id IN ('stale', 'spent');
		UPDATE kern_run SET attempt = 3 WHERE id = 'spent'`); err != nil {
		t.Fatal(err)
	}
	res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requeued) != 1 || res.Requeued[0] != "stale" || len(res.Failed) != 1 || res.Failed[0] != "spent" {
		t.Fatalf("rescued %+v", res)
	}
	stale, _ := d.GetRun(ctx, "stale")
	if stale.Status != run.StatusPending || !strings.Contains(stale.Error, "no heartbeat") {
		t.Fatalf("rescued run: %+v", stale)
	}
	var jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'run_id' = 'stale'`).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("jobs for the rescued run: %d, %v", jobs, err)
	}
	spent, _ := d.GetRun(ctx, "spent")
	if spent.Status != run.StatusError || !strings.Contains(spent.Error, "attempt 3 of 3") {
		t.Fatalf("run out of attempts: %+v", spent)
	}
	if fresh, _ := d.GetRun(ctx, "fresh"); fresh.Status != run.StatusRunning {
		t.Fatalf("a live run was rescued: %+v", fresh)
	}
	// Nothing left to rescue: a second pass does nothing.
	if res, err := ex(d).RescueStale(ctx, 30*time.Second, 3); err != nil || len(res.Requeued)+len(res.Failed) != 0 {
		t.Fatalf("second pass: %+v, %v", res, err)
	}
}

// WaitRun sleeps until the run's terminal event's notification wakes it.
// The periodic re-check is an hour away here, and the waiter is asleep
// (subscribed, LISTENed, re-checked, waiting) before the run finishes, so
// only the notification can wake it within the test's deadline.
func TestWaitRunWakesOnFinish(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	hooks := db.WakeHooksOf(d)
	hooks.SetRecheckEvery(time.Hour)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "w")
	if _, err := ex(d).StartRun(ctx, "w", nil); err != nil {
		t.Fatal(err)
	}

	type result struct {
		out *run.Output
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := d.WaitRun(ctx, "w")
		done <- result{out, err}
	}()
	pollUntil(t, 10*time.Second, "WaitRun to go to sleep", func() bool {
		return hooks.SleepingWaiters() == 1 && hooks.Listening() == "kern_event" && hooks.Waiting()
	})
	select {
	case r := <-done:
		t.Fatalf("WaitRun returned before the run finished: %+v, %v", r.out, r.err)
	default:
	}
	if err := ex(d).FinishRun(ctx, "w", 1, engine.Finish{Status: run.StatusError, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.out.Status != run.StatusError || r.out.Error != "boom" {
			t.Fatalf("WaitRun = %+v, %v", r.out, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run's terminal notification did not wake WaitRun (the next re-check is an hour away)")
	}
}

func TestWaitRunHonoursContext(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	submit(t, d, "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := d.WaitRun(ctx, "slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
