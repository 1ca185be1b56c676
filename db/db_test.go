package db_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
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
	if _, err := d.StartRun(ctx, "done", 1); err != nil {
		t.Fatal(err)
	}
	if err := d.FinishRun(ctx, "done", 1, db.Finish{Status: run.StatusCompleted, Tail: "answer"}); err != nil {
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
	if _, err := d.StartRun(ctx, "running", 1); err != nil {
		t.Fatal(err)
	}
	if err := d.AppendContent(ctx, "running", 1, "part"); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.CancelRun(ctx, "running"); err != nil || !ok {
		t.Fatalf("cancel running = %v, %v; want true", ok, err)
	}
	err := d.FinishRun(ctx, "running", 1, db.Finish{Status: run.StatusCompleted, Tail: " and more"})
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
	started, err := d.StartRun(ctx, "future", 1)
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
	if _, err := d.StartRun(ctx, "fenced", 1); err != nil {
		t.Fatal(err)
	}
	// attempt 2 takes over a run still marked running by attempt 1
	if _, err := d.StartRun(ctx, "fenced", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := d.StartRun(ctx, "fenced", 2); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("restart by the same attempt: %v, want run.ErrNotRunning", err)
	}
	if err := d.AppendContent(ctx, "fenced", 1, "zombie"); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("zombie append: %v, want run.ErrNotRunning", err)
	}
	if err := d.FinishRun(ctx, "fenced", 1, db.Finish{Status: run.StatusCompleted}); !errors.Is(err, run.ErrNotRunning) {
		t.Fatalf("zombie finish: %v, want run.ErrNotRunning", err)
	}
	if err := d.FinishRun(ctx, "fenced", 2, db.Finish{Status: run.StatusCompleted, Tail: "ok"}); err != nil {
		t.Fatal(err)
	}
	got, _ := d.GetRun(ctx, "fenced")
	if got.Status != run.StatusCompleted || got.Content != "ok" || got.Attempt != 2 {
		t.Fatalf("got %+v", got)
	}
}

func TestWaitRunWakesOnFinish(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "w")
	if _, err := d.StartRun(ctx, "w", 1); err != nil {
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
	select {
	case r := <-done:
		t.Fatalf("WaitRun returned before the run finished: %+v, %v", r.out, r.err)
	case <-time.After(50 * time.Millisecond): // only a check that it does block
	}
	if err := d.FinishRun(ctx, "w", 1, db.Finish{Status: run.StatusError, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.out.Status != run.StatusError || r.out.Error != "boom" {
		t.Fatalf("WaitRun = %+v, %v", r.out, r.err)
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
