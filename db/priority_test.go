package db_test

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
)

// A run keeps its priority on every job it gets: the job the answer to its
// last open call gives it, and the job a rescue gives it (its worker died,
// or its job was lost), whichever way it was submitted. It used to become
// River's default, 2.
func TestPriorityKeptOnRequeue(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	priorityOf := func(id string) (job int64, priority int) {
		t.Helper()
		if err := d.Pool().QueryRow(ctx, `SELECT j.id, j.priority FROM kern_run r JOIN river_job j ON j.id = r.job_id WHERE r.id = $1`,
			id).Scan(&job, &priority); err != nil {
			t.Fatalf("the job of %s: %v", id, err)
		}
		return job, priority
	}
	priorities := []int{1, 4, 0} // 0: none named, DefaultPriority
	first := map[string]int64{}
	for _, p := range priorities {
		for _, kind := range []string{"answered", "stale", "orphan"} {
			id := fmt.Sprintf("%s-%d", kind, p)
			if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x", Enqueue: true, Priority: p}); err != nil {
				t.Fatal(err)
			}
		}
		// A submit in the caller's transaction takes another path.
		tx, err := d.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("answered-tx-%d", p)
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x", Enqueue: true, Priority: p, Tx: tx}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{id, fmt.Sprintf("answered-%d", p), fmt.Sprintf("stale-%d", p)} {
			job, got := priorityOf(id)
			if got != cmp.Or(p, db.DefaultPriority) {
				t.Fatalf("%s submitted with priority %d: its job has %d", id, p, got)
			}
			first[id] = job
			if _, err := ex(d).StartRun(ctx, id, &job); err != nil {
				t.Fatal(err)
			}
		}
		// The answered runs wait on two calls; both answered, they are
		// pending with a new job.
		for _, id := range []string{id, fmt.Sprintf("answered-%d", p)} {
			waitOn(t, d, id)
			if err := d.ApproveToolCall(ctx, id, "c1"); err != nil {
				t.Fatal(err)
			}
			if err := d.SubmitToolResult(ctx, id, "c2", "out"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The stale runs' worker stopped heartbeating an hour ago; the orphans'
	// jobs were discarded a minute ago, and nothing happened to them since.
	if _, err := d.Pool().Exec(ctx, `
		UPDATE kern_run SET heartbeat_at = now() - interval '1 hour' WHERE id LIKE 'stale-%';
		UPDATE kern_run SET created_at = now() - interval '1 minute' WHERE id LIKE 'orphan-%';
		UPDATE kern_run_event SET at = now() - interval '1 minute' WHERE run_id LIKE 'orphan-%';
		UPDATE river_job SET state = 'discarded', finalized_at = now() - interval '1 minute' WHERE args->>'run_id' LIKE 'orphan-%'`); err != nil {
		t.Fatal(err)
	}
	for _, p := range priorities {
		first[fmt.Sprintf("orphan-%d", p)], _ = priorityOf(fmt.Sprintf("orphan-%d", p))
	}
	res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Requeued)
	if want := []string{"orphan-0", "orphan-1", "orphan-4", "stale-0", "stale-1", "stale-4"}; !slices.Equal(res.Requeued, want) {
		t.Fatalf("rescued %v, want %v", res.Requeued, want)
	}
	for _, p := range priorities {
		for _, kind := range []string{"answered", "answered-tx", "stale", "orphan"} {
			id := fmt.Sprintf("%s-%d", kind, p)
			job, got := priorityOf(id)
			if job == first[id] {
				t.Errorf("%s: still its first job %d, want a new one", id, job)
			}
			if got != cmp.Or(p, db.DefaultPriority) {
				t.Errorf("%s (priority %d): its new job has priority %d", id, cmp.Or(p, db.DefaultPriority), got)
			}
		}
	}
}
