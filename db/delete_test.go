package db_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// insertFinished inserts n finished runs, prefix-1 … prefix-n, that finished
// ago (the later the number, the later the run finished), each with the
// three events of a completed run, straight into the tables: DeleteRuns'
// tests need thousands of old runs, not the path that makes them.
func insertFinished(t *testing.T, ctx context.Context, d *db.DB, prefix string, n int, status run.Status, ago time.Duration) {
	t.Helper()
	if _, err := d.Pool().Exec(ctx, `
		WITH runs AS (
			INSERT INTO kern_run (id, agent_name, input, status, content, attempt, execution, event_seq, created_at, started_at, finished_at)
			SELECT $1 || '-' || i, 'a', 'x', $3, 'y', 1, 1, 3, t, t, t
			FROM generate_series(1, $2::int) i, LATERAL (SELECT now() - make_interval(secs => $4) + i * interval '1 millisecond' AS t) ts
			RETURNING id
		)
		INSERT INTO kern_run_event (run_id, seq, type) SELECT id, s, 'run.x' FROM runs, generate_series(1, 3) s`,
		prefix, n, string(status), ago.Seconds()); err != nil {
		t.Fatal(err)
	}
}

// logDeletes records how many runs each statement deleted, in delete_log.
func logDeletes(t *testing.T, ctx context.Context, d *db.DB) {
	t.Helper()
	if _, err := d.Pool().Exec(ctx, `
		CREATE TABLE delete_log (at timestamptz NOT NULL DEFAULT clock_timestamp(), n bigint NOT NULL);
		CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO delete_log (n) SELECT count(*) FROM old_rows;
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_delete AFTER DELETE ON kern_run REFERENCING OLD TABLE AS old_rows
			FOR EACH STATEMENT EXECUTE FUNCTION log_delete()`); err != nil {
		t.Fatal(err)
	}
}

// deleted is what delete_log recorded: the runs deleted per statement.
func deleted(t *testing.T, ctx context.Context, d *db.DB) []int64 {
	t.Helper()
	rows, err := d.Pool().Query(ctx, `SELECT n FROM delete_log ORDER BY at`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func count(t *testing.T, ctx context.Context, d *db.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := d.Pool().QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// DeleteRuns deletes a large backlog in statements of at most 1,000 runs,
// with their events and cancel requests, and nothing else.
func TestDeleteRunsInBatches(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	insertFinished(t, ctx, d, "old", 2500, run.StatusCompleted, 2*time.Hour)
	insertFinished(t, ctx, d, "recent", 10, run.StatusError, 0)
	for _, id := range []string{"waiting", "going"} {
		submit(t, d, id)
	}
	if _, err := ex(d).StartRun(ctx, "going", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = now() - interval '3 hours' WHERE id IN ('waiting', 'going');
		INSERT INTO kern_run_cancel (run_id, requested_at) VALUES ('old-7', now() - interval '2 hours'), ('recent-3', now())`); err != nil {
		t.Fatal(err)
	}
	logDeletes(t, ctx, d)

	n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour})
	if err != nil || n != 2500 {
		t.Fatalf("deleted %d, %v; want the 2500 old runs", n, err)
	}
	if got := deleted(t, ctx, d); !slices.Equal(got, []int64{1000, 1000, 500}) {
		t.Fatalf("runs deleted per statement: %v, want batches of at most 1000", got)
	}
	if left := count(t, ctx, d, `SELECT count(*) FROM kern_run_event WHERE run_id LIKE 'old-%'`); left != 0 {
		t.Fatalf("%d events of deleted runs left", left)
	}
	if left := count(t, ctx, d, `SELECT count(*) FROM kern_run_cancel WHERE run_id = 'old-7'`); left != 0 {
		t.Fatal("the cancel request of a deleted run is left")
	}
	if kept := count(t, ctx, d, `SELECT count(*) FROM kern_run`); kept != 12 {
		t.Fatalf("%d runs left, want the 10 recent and the 2 live ones", kept)
	}
	if kept := count(t, ctx, d, `SELECT count(*) FROM kern_run_event WHERE run_id LIKE 'recent-%'`) +
		count(t, ctx, d, `SELECT count(*) FROM kern_run_cancel WHERE run_id = 'recent-3'`); kept != 31 {
		t.Fatalf("%d events and cancel requests of the runs kept are left, want 31", kept)
	}
	if n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}); err != nil || n != 0 {
		t.Fatalf("again: deleted %d, %v", n, err)
	}
}

// A status filter passes over the other runs without losing its place:
// every matching run goes, in batches, and no other.
func TestDeleteRunsByStatusInBatches(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	insertFinished(t, ctx, d, "failed", 1500, run.StatusError, 2*time.Hour)
	insertFinished(t, ctx, d, "done", 1500, run.StatusCompleted, 2*time.Hour)
	logDeletes(t, ctx, d)
	n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour, Statuses: []run.Status{run.StatusError}})
	if err != nil || n != 1500 {
		t.Fatalf("deleted %d, %v; want the 1500 failed runs", n, err)
	}
	if got := deleted(t, ctx, d); slices.Max(got) > 1000 {
		t.Fatalf("runs deleted per statement: %v, want at most 1000", got)
	}
	if left := count(t, ctx, d, `SELECT count(*) FROM kern_run WHERE status = 'completed'`); left != 1500 {
		t.Fatalf("%d completed runs left, want 1500", left)
	}
}

// Deleters running at once (the retention of every worker) share the
// work: together they delete each run once, and none waits for another.
func TestDeleteRunsConcurrently(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	insertFinished(t, ctx, d, "old", 5000, run.StatusCompleted, 2*time.Hour)
	logDeletes(t, ctx, d)
	const deleters = 4
	counts := make([]int, deleters)
	errs := make([]error, deleters)
	var wg sync.WaitGroup
	for i := range deleters {
		wg.Go(func() { counts[i], errs[i] = d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}) })
	}
	wg.Wait()
	total := 0
	for i := range deleters {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += counts[i]
	}
	// A deleter stops at a short batch, which another's locked rows can
	// cause; what is left is then at most what the others still hold.
	left := count(t, ctx, d, `SELECT count(*) FROM kern_run`)
	if total+left != 5000 {
		t.Fatalf("deleted %v (%d) with %d left, want 5000 in all", counts, total, left)
	}
	if n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}); err != nil || n != left {
		t.Fatalf("a last deleter: %d, %v; want the %d left", n, err, left)
	}
	if got := deleted(t, ctx, d); slices.Max(got) > 1000 {
		t.Fatalf("runs deleted per statement: %v, want at most 1000", got)
	}
}

// A cancel-before-start request lasts OlderThan: then DeleteRuns removes
// it, when its run never came, in batches; requests whose run exists stay
// with the run.
func TestDeleteRunsStrayCancelRequests(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	for _, id := range []string{"never-old", "never-new"} {
		if ok, err := d.CancelRun(ctx, id); err != nil || !ok {
			t.Fatalf("cancel %s before it exists: %v, %v", id, ok, err)
		}
	}
	submit(t, d, "live")
	if ok, err := d.CancelRun(ctx, "live"); err != nil || !ok {
		t.Fatalf("cancel live: %v, %v", ok, err)
	}
	if _, err := d.Pool().Exec(ctx, `
		INSERT INTO kern_run_cancel (run_id, requested_at) SELECT 'stray-' || i, now() - interval '3 hours' FROM generate_series(1, 2300) i;
		UPDATE kern_run_cancel SET requested_at = now() - interval '2 hours' WHERE run_id IN ('never-old', 'live')`); err != nil {
		t.Fatal(err)
	}
	strays := `SELECT count(*) FROM kern_run_cancel WHERE run_id LIKE 'stray-%' OR run_id = 'never-old'`
	// Deleting completed runs only leaves the requests alone: they are
	// what cancelled runs are made of.
	if _, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour, Statuses: []run.Status{run.StatusCompleted}}); err != nil {
		t.Fatal(err)
	}
	if left := count(t, ctx, d, strays); left != 2301 {
		t.Fatalf("%d stray requests left after deleting completed runs, want all 2301", left)
	}
	if n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}); err != nil || n != 0 {
		t.Fatalf("deleted %d runs, %v; want none (the cancelled run is recent)", n, err)
	}
	if left := count(t, ctx, d, strays); left != 0 {
		t.Fatalf("%d stray requests older than an hour left", left)
	}
	if kept := count(t, ctx, d, `SELECT count(*) FROM kern_run_cancel WHERE run_id IN ('never-new', 'live')`); kept != 2 {
		t.Fatalf("%d of the recent request and the request of an existing run kept, want 2", kept)
	}
	// The old request is gone, so a run submitted with its id now runs;
	// the recent one still cancels its run before it starts.
	for id, want := range map[string]run.Status{"never-old": run.StatusRunning, "never-new": run.StatusCancelled} {
		submit(t, d, id)
		out, err := ex(d).StartRun(ctx, id, nil)
		if err != nil || out.Status != want {
			t.Fatalf("start %s: %+v, %v; want %s", id, out, err, want)
		}
	}
}
