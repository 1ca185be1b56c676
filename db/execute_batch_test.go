package db_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Many executions at once go through shared, batched statements; each must
// still get exactly its own outcome, fenced on its own.
func TestConcurrentExecutionsKeepTheirOwnOutcomes(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	const n = 200
	// Every third run is cancelled before it exists, so its start finds
	// the request; every fifth is finished with a stale attempt, which must
	// change nothing.
	for i := range n {
		if i%3 == 0 {
			if _, err := d.CancelRun(ctx, fmt.Sprintf("c%03d", i)); err != nil {
				t.Fatal(err)
			}
		}
		submit(t, d, fmt.Sprintf("c%03d", i))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("c%03d", i)
			out, err := ex(d).StartRun(ctx, id, nil)
			if err != nil {
				errs[i] = err
				return
			}
			if out.Status == run.StatusCancelled {
				return
			}
			if err := ex(d).AppendContent(ctx, id, out.Attempt, "answer "); err != nil {
				errs[i] = err
				return
			}
			attempt := out.Attempt
			if i%5 == 0 {
				attempt++
			}
			errs[i] = ex(d).FinishRun(ctx, id, attempt, engine.Finish{Status: run.StatusCompleted, Tail: id + "\x00"})
		})
	}
	wg.Wait()

	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		got, err := d.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%3 == 0:
			if errs[i] != nil || got.Status != run.StatusCancelled {
				t.Fatalf("%s: %v, status %s; want cancelled before start", id, errs[i], got.Status)
			}
		case i%5 == 0:
			if !errors.Is(errs[i], run.ErrNotRunning) || got.Status != run.StatusRunning || got.Content != "answer " {
				t.Fatalf("%s: stale finish gave %v and left %s %q", id, errs[i], got.Status, got.Content)
			}
		default:
			// A NUL from the model is stored as U+FFFD rather than failing the run.
			if want := "answer " + id + "\uFFFD"; errs[i] != nil || got.Status != run.StatusCompleted || got.Content != want {
				t.Fatalf("%s: %v, %s %q; want completed %q", id, errs[i], got.Status, got.Content, want)
			}
		}
	}
}

func TestStartRunUnknown(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	if _, err := ex(d).StartRun(context.Background(), "missing", nil); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("err = %v, want run.ErrNotFound", err)
	}
}

// Concurrent submits share transactions; duplicates among them must still
// fail alone, idempotent pairs must still meet on one run, and every run
// must have exactly its own fields and, if background, exactly one job.
func TestConcurrentSubmitsKeepTheirOwnOutcomes(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	const n = 150
	params := make([]db.SubmitParams, n)
	for i := range n {
		params[i] = db.SubmitParams{
			RunID: fmt.Sprintf("s%03d", i), AgentName: "a", Input: fmt.Sprintf("prompt %d", i),
			SessionID: fmt.Sprintf("session-%d", i%7), Metadata: map[string]any{"i": float64(i)},
			Timeout: time.Duration(i) * time.Second, Enqueue: i%2 == 0,
		}
		switch {
		case i%10 == 1: // same id as the run before it
			params[i].RunID = params[i-1].RunID
		case i%10 == 3: // same idempotency key as the run before it
			params[i-1].IdempotencyKey = fmt.Sprintf("key-%d", i)
			params[i].IdempotencyKey = fmt.Sprintf("key-%d", i)
		}
	}
	outs := make([]*run.Output, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { outs[i], errs[i] = d.SubmitRun(ctx, params[i]) })
	}
	wg.Wait()

	for i := 0; i < n; i += 10 {
		// Of the pair with one id, exactly one was created.
		if (errs[i] == nil) == (errs[i+1] == nil) {
			t.Fatalf("same id %s: errors %v and %v; want exactly one run.ErrAlreadyExists", params[i].RunID, errs[i], errs[i+1])
		}
		for _, j := range []int{i, i + 1} {
			if errs[j] != nil && !errors.Is(errs[j], run.ErrAlreadyExists) {
				t.Fatalf("%d: %v, want run.ErrAlreadyExists", j, errs[j])
			}
		}
		// The idempotent pair got one run between them.
		if errs[i+2] != nil || errs[i+3] != nil || outs[i+2].RunID != outs[i+3].RunID {
			t.Fatalf("idempotent pair %d/%d: %v %v, runs %v %v", i+2, i+3, errs[i+2], errs[i+3], outs[i+2], outs[i+3])
		}
	}
	// Every run created holds exactly what its creator submitted.
	wantJobs, created := 0, map[string]bool{}
	for j := range n {
		if errs[j] != nil || outs[j].RunID != params[j].RunID || created[outs[j].RunID] {
			continue // failed, or the idempotent loser, or seen
		}
		created[outs[j].RunID] = true
		if params[j].Enqueue {
			wantJobs++
		}
		got, err := d.GetRun(ctx, outs[j].RunID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Input != params[j].Input || got.SessionID != params[j].SessionID ||
			got.Metadata["i"] != float64(j) || got.Timeout != params[j].Timeout {
			t.Fatalf("run %s holds %+v; submitted %+v", got.RunID, got, params[j])
		}
	}
	var jobs, orphans int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
		SELECT 1 FROM kern_run r WHERE r.job_id = j.id)) FROM river_job j`).Scan(&jobs, &orphans); err != nil {
		t.Fatal(err)
	}
	if jobs != wantJobs || orphans != 0 {
		t.Fatalf("%d jobs (%d without their run), want %d", jobs, orphans, wantJobs)
	}
}
