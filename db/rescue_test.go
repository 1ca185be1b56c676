package db_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// submitMany submits n background runs, ids prefix-0 … prefix-(n-1), from
// several goroutines (so the submit batcher groups them, as under load).
func submitMany(t *testing.T, ctx context.Context, d *db.DB, prefix string, n int) {
	t.Helper()
	const submitters = 16
	var wg sync.WaitGroup
	errs := make(chan error, submitters)
	for g := range submitters {
		wg.Go(func() {
			for i := g; i < n; i += submitters {
				if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: fmt.Sprintf("%s-%d", prefix, i), AgentName: "a", Input: "x", Enqueue: true}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// rowsRead is how many rows of each table this session's backend has read
// so far (sequential and index fetches), from the statistics it has
// flushed. d must have a pool of one connection, so that it is the backend
// that did the work being measured.
func rowsRead(t *testing.T, ctx context.Context, d *db.DB) map[string]int64 {
	t.Helper()
	var version int
	if err := d.Pool().QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 150000 {
		t.Skip("counting the rows a statement reads needs pg_stat_force_next_flush (Postgres 15)")
	}
	// The flush happens when the backend goes idle after this statement,
	// before it answers: by the time Exec returns, the counters are in.
	if _, err := d.Pool().Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		t.Fatal(err)
	}
	rows, err := d.Pool().Query(ctx, `SELECT relname::text, COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
		FROM pg_stat_user_tables WHERE relname IN ('kern_run', 'river_job', 'kern_run_event')`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var table string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&table, &n}, func() error { out[table] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// populate runs fill on a DB of its own and closes it, then waits for its
// backends to be gone: a backend flushes its statistics before it leaves
// pg_stat_activity, so the rows read counted afterwards (rowsRead) are only
// the measured backend's, not the fill's flushed late.
func populate(t *testing.T, ctx context.Context, url string, fill func(d *db.DB)) {
	t.Helper()
	d, err := db.Open(ctx, kerntest.WithPoolSize(url, kerntest.TestPoolSize))
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer d.Close()
		fill(d)
	}()
	probe, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = probe.Close(context.WithoutCancel(ctx)) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var others int
		if err := probe.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&others); err != nil {
			t.Fatal(err)
		}
		if others == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends of the fill still connected after 10s", others)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A legitimate backlog — 10,000 pending runs, an hour old, each with an
// available job, waiting for busy workers — is not rescanned by every
// rescue of every worker: one rescue reads a bounded number of runs.
func TestRescueReadsBoundedRowsWithABacklog(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, 2*time.Minute)
	backlog := 10000
	if testing.Short() {
		backlog = 2000 // still 4 times the bound; the long tier (make test-long) has 10,000
	}
	populate(t, ctx, url, func(d *db.DB) {
		submitMany(t, ctx, d, "backlog", backlog)
		if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = created_at - interval '1 hour'`); err != nil {
			t.Fatal(err)
		}
	})

	rescuer := kerntest.Open(t, kerntest.WithPoolSize(url, 1))
	for pass := range 3 {
		before := rowsRead(t, ctx, rescuer)
		res, err := ex(rescuer).RescueStale(ctx, 30*time.Second, 3)
		if err != nil {
			t.Fatal(err)
		}
		after := rowsRead(t, ctx, rescuer)
		t.Logf("rescue %d with %d pending runs read %d kern_run, %d river_job and %d kern_run_event rows", pass+1, backlog,
			after["kern_run"]-before["kern_run"], after["river_job"]-before["river_job"], after["kern_run_event"]-before["kern_run_event"])
		if len(res.Requeued)+len(res.Failed) != 0 {
			t.Fatalf("runs waiting for a worker were rescued: %+v", res)
		}
		for table, n := range after {
			if read := n - before[table]; read >= 500 {
				t.Errorf("one rescue read %d %s rows with %d pending runs; want fewer than 500", read, table, backlog)
			}
		}
	}
}

// Each kind of orphan is re-queued with a new job by the part of the rescue
// that looks for it; runs that someone will still start are left alone.
func TestRescueOrphans(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	background := []string{"taken", "discarded", "cancelled", "jobless", "queued", "fresh-taken", "just-released"}
	for _, id := range background {
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "x", Enqueue: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"foreground", "backoff"} {
		submit(t, d, id)
	}
	// A worker took the job of just-released and handed the run back a
	// moment ago (River has not recorded the snooze yet): not an orphan.
	jobOf := jobs(t, ctx, d)
	rel := jobOf["just-released"]
	if _, err := ex(d).StartRun(ctx, "just-released", &rel); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).ReleaseRun(ctx, "just-released", 1); err != nil {
		t.Fatal(err)
	}
	// A foreground run waiting out a ten-minute retry delay.
	if _, err := ex(d).StartRun(ctx, "backoff", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).RetryRun(ctx, "backoff", 1, "HTTP 429", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Everything happened a minute ago, as far as creation and events go.
	if _, err := d.Pool().Exec(ctx, `
		UPDATE kern_run SET created_at = now() - interval '1 minute';
		UPDATE kern_run_event SET at = now() - interval '1 minute' WHERE run_id <> 'just-released';
		UPDATE kern_run SET heartbeat_at = now() - interval '1 minute' WHERE id = 'foreground';
		UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '1 minute'
			WHERE args->>'run_id' IN ('taken', 'just-released');
		UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE args->>'run_id' = 'fresh-taken';
		UPDATE river_job SET state = 'discarded', finalized_at = now() - interval '1 minute' WHERE args->>'run_id' = 'discarded';
		UPDATE river_job SET state = 'cancelled', finalized_at = now() - interval '1 minute' WHERE args->>'run_id' = 'cancelled';
		DELETE FROM river_job WHERE args->>'run_id' = 'jobless'`); err != nil {
		t.Fatal(err)
	}

	// First without the sweep (another rescuer holds its cursor): the
	// candidates from River's jobs and the foreground runs find the orphans
	// of kinds (a), (b) and (c); the jobless run is the sweep's to find.
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a failing test must not hold the pool open
	if _, err := tx.Exec(ctx, `SELECT * FROM kern_rescue_sweep FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
	_ = tx.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Requeued)
	if want := []string{"cancelled", "discarded", "foreground", "taken"}; !slices.Equal(res.Requeued, want) || len(res.Failed) != 0 {
		t.Fatalf("rescued %+v without the sweep, want %v requeued", res, want)
	}
	res, err = ex(d).RescueStale(ctx, 30*time.Second, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Requeued, []string{"jobless"}) || len(res.Failed) != 0 {
		t.Fatalf("the sweep rescued %+v, want the jobless run", res)
	}

	after := jobs(t, ctx, d)
	for _, id := range []string{"taken", "discarded", "cancelled", "jobless", "foreground"} {
		out, err := d.GetRun(ctx, id)
		if err != nil || out.Status != run.StatusPending {
			t.Fatalf("%s after the rescue: %+v, %v", id, out, err)
		}
		if after[id] == 0 || after[id] == jobOf[id] || jobState(t, ctx, d, after[id]) != "available" {
			t.Errorf("%s: job %d (was %d), want a new available one", id, after[id], jobOf[id])
		}
	}
	for _, id := range []string{"queued", "fresh-taken", "just-released", "backoff"} {
		if after[id] != jobOf[id] {
			t.Errorf("%s was rescued: job %d, was %d", id, after[id], jobOf[id])
		}
	}
	// A rescued run has a job that can start it: nothing is rescued twice.
	for range 2 {
		if res, err := ex(d).RescueStale(ctx, 30*time.Second, 3); err != nil || len(res.Requeued)+len(res.Failed) != 0 {
			t.Fatalf("a later rescue: %+v, %v", res, err)
		}
	}
}

// jobs maps run ids to their current job (0 for none).
func jobs(t *testing.T, ctx context.Context, d *db.DB) map[string]int64 {
	t.Helper()
	rows, err := d.Pool().Query(ctx, `SELECT id, COALESCE(job_id, 0) FROM kern_run`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var id string
	var job int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &job}, func() error { out[id] = job; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func jobState(t *testing.T, ctx context.Context, d *db.DB, job int64) string {
	t.Helper()
	var state string
	if err := d.Pool().QueryRow(ctx, `SELECT state::text FROM river_job WHERE id = $1`, job).Scan(&state); err != nil {
		t.Fatalf("job %d: %v", job, err)
	}
	return state
}

// The sweep goes through the whole backlog a page at a time and comes back
// to the start, so an orphan anywhere in it is found within a few rescues.
func TestRescueSweepCoversTheBacklog(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	submitMany(t, ctx, d, "queued", 250)
	if _, err := d.Pool().Exec(ctx, `
		UPDATE kern_run SET created_at = now() - interval '1 hour' + (split_part(id, '-', 2)::int * interval '1 second');
		DELETE FROM river_job WHERE args->>'run_id' IN ('queued-20', 'queued-180')`); err != nil {
		t.Fatal(err)
	}
	var rescued []string
	for pass := 0; len(rescued) < 2; pass++ {
		if pass == 4 {
			t.Fatalf("after %d rescues of 100 runs each, rescued only %v of 250 pending runs", pass, rescued)
		}
		res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
		if err != nil {
			t.Fatal(err)
		}
		rescued = append(rescued, res.Requeued...)
	}
	slices.Sort(rescued)
	if !slices.Equal(rescued, []string{"queued-180", "queued-20"}) {
		t.Fatalf("rescued %v, want the two jobless runs once each", rescued)
	}
	// The cursor wrapped around: a job deleted now, early in the backlog,
	// is found too.
	if _, err := d.Pool().Exec(ctx, `DELETE FROM river_job WHERE args->>'run_id' = 'queued-5'`); err != nil {
		t.Fatal(err)
	}
	for pass := 0; ; pass++ {
		if pass == 4 {
			t.Fatal("the sweep did not come back to the start of the backlog")
		}
		res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(res.Requeued, "queued-5") {
			return
		}
	}
}

// A foreground run waiting out its retry delay is not an orphan until the
// delay is over and staleAfter has passed on top.
func TestRescueForegroundRetryDelay(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "fg")
	if _, err := ex(d).StartRun(ctx, "fg", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).RetryRun(ctx, "fg", 1, "HTTP 503", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = now() - interval '2 hours';
		UPDATE kern_run_event SET at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	rescue := func() []string {
		t.Helper()
		res, err := ex(d).RescueStale(ctx, 30*time.Second, 3)
		if err != nil {
			t.Fatal(err)
		}
		return res.Requeued
	}
	if got := rescue(); len(got) != 0 {
		t.Fatalf("a run an hour before its retry was rescued: %v", got)
	}
	// The caller would have retried 40s ago (the delay ran out) and has
	// not: it is gone.
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET heartbeat_at = now() - interval '40 seconds'`); err != nil {
		t.Fatal(err)
	}
	if got := rescue(); !slices.Equal(got, []string{"fg"}) {
		t.Fatalf("rescued %v, want the run whose caller did not come back", got)
	}
	out, err := d.GetRun(ctx, "fg")
	if err != nil || out.Status != run.StatusPending || out.Attempt != 1 {
		t.Fatalf("rescued foreground run: %+v, %v", out, err)
	}
}
