package db_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
)

// A completion or webhook job River has running on a worker whose session
// ended is made available again at once (or discarded when out of
// attempts); one held by a live worker, or by a worker whose session was
// recorded on an earlier server instance, is not touched, nor is a run's
// own job.
func TestHookJobOfAWorkerWhoseSessionEndedIsRescued(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	store := d.Engine(engine.Key{})
	const hour = time.Hour

	job := func(kind, worker string, attempt int) int64 {
		t.Helper()
		var id int64
		if err := d.Pool().QueryRow(ctx, `INSERT INTO river_job (kind, args, queue, state, attempt, max_attempts, priority, attempted_at, attempted_by)
			VALUES ($1, '{}', 'hooks', 'running', $3, 5, 2, now(), ARRAY['someone-before', $2]) RETURNING id`, kind, worker, attempt).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	start := func(worker string) engine.Session {
		t.Helper()
		if err := store.RegisterWorker(ctx, worker, []string{"a"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		s, err := store.OpenSession(ctx, worker)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	alive := start("alive")
	defer alive.Close(ctx)
	dying := start("dying")
	old := start("old")
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_worker SET session_server_start = session_server_start - interval '1 day' WHERE id = 'old'`); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{
		job("kern_complete", "alive", 1): "running",
		job("kern_webhook", "alive", 1):  "running",
		job("kern_complete", "old", 1):   "running",
		job("kern_run", "dying", 1):      "running", // a run's job: the run is rescued, not its job
		job("kern_complete", "dying", 1): "available",
		job("kern_webhook", "dying", 2):  "available",
		job("kern_webhook", "dying", 5):  "discarded", // out of attempts
	}
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("dead sessions with every session open: %v, %v", dead, err)
	}
	if res, err := store.RescueStale(ctx, hour, 3); err != nil || res.HookJobs != 0 {
		t.Fatalf("rescued with every session open: %+v, %v", res, err)
	}
	if err := dying.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitDeadSession(t, ctx, store, 10*time.Second, "the closed session's hook jobs never counted as dead")
	res, err := store.RescueStale(ctx, hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.HookJobs != 2 {
		t.Fatalf("made %d hook jobs available, want 2", res.HookJobs)
	}
	for id, state := range want {
		var got string
		var errs int
		if err := d.Pool().QueryRow(ctx, `SELECT state::text, coalesce(array_length(errors, 1), 0) FROM river_job WHERE id = $1`, id).Scan(&got, &errs); err != nil {
			t.Fatal(err)
		}
		if got != state {
			t.Errorf("job %d: %s, want %s", id, got, state)
		}
		if rescued := state != "running"; rescued != (errs == 1) {
			t.Errorf("job %d (%s): %d errors recorded", id, got, errs)
		}
	}
	if dead, err := store.DeadSessionRuns(ctx); err != nil || dead {
		t.Fatalf("dead sessions after the rescue: %v, %v", dead, err)
	}
}
