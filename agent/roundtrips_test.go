package agent_test

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// statementLog is a pgx tracer that names every statement a pool sends.
type statementLog struct {
	mu    sync.Mutex
	names []string
}

var riverQueryName = regexp.MustCompile(`^-- name: (\w+)`)

// statementName names kern's statements by what they do and River's by
// their sqlc name.
func statementName(sql string) string {
	sql = strings.TrimSpace(sql)
	for _, s := range []struct{ marker, name string }{
		{"kern_schedule", "kern: schedules"}, // the worker's once-a-second look at its agents' schedules
		{"INSERT INTO kern_run (", "kern: insert run"},
		{"AS r(req_id, req_job, req_worker)", "kern: start runs"},
		{"req_delta", "kern: append contents"},
		{"req_status", "kern: finish runs"},
		{"SELECT 'done', id FROM kern_run", "kern: listener recheck"},
		{"AS req(req_id, req_execution)", "kern: heartbeats"},
		{"FOR UPDATE SKIP LOCKED", "kern: rescue"},
		{"WHERE status = 'running' AND worker_id = ANY(ARRAY(", "kern: liveness probe"}, // four times a second, not per run
		{"FOR UPDATE OF r SKIP LOCKED", "kern: rescue"},
		// The listener's own connection (its config is the pool's, tracer
		// included) LISTENs when a run needs a channel it had dropped after
		// an idle second: not a round trip the run waits for.
		{"UNLISTEN ", "listener: UNLISTEN"},
		{"LISTEN ", "listener: LISTEN"},
		{"INTO kern_worker", "kern: register worker"},
		{".river_insert'", "kern: notify workers"}, // after the submit's commit, from the notifier's goroutine
	} {
		if strings.Contains(sql, s.marker) {
			return s.name
		}
	}
	if m := riverQueryName.FindStringSubmatch(sql); m != nil {
		return "river: " + m[1]
	}
	if low := strings.ToLower(sql); low == "begin" || low == "commit" {
		return strings.ToUpper(low)
	}
	if strings.Contains(sql, "kern_") {
		return "kern: unknown: " + sql[:min(len(sql), 60)]
	}
	return "other: " + sql[:min(len(sql), 40)]
}

func (l *statementLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	l.names = append(l.names, statementName(data.SQL))
	l.mu.Unlock()
	return ctx
}

func (*statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (l *statementLog) reset() { l.mu.Lock(); l.names = nil; l.mu.Unlock() }

// statementCounts is how often each named statement was sent.
type statementCounts struct{ byName map[string]int }

func (c statementCounts) String() string {
	var lines []string
	for name, n := range c.byName {
		lines = append(lines, fmt.Sprintf("%3d  %s", n, name))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (l *statementLog) count() statementCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[string]int{}
	for _, name := range l.names {
		n[name]++
	}
	return statementCounts{byName: n}
}

// One background run, from submit to terminal, costs these Postgres round
// trips and no more (BENCHMARKS.md lists them): the submit transaction
// (BEGIN, River's job insert, the run row, COMMIT), then River's fetch, the
// claim, the final write and River's completion. Under load the claim and
// the final write are shared by many runs (batched); alone, a run pays one
// each.
//
// The submitting side and the worker get a traced pool each, so River's
// maintenance and kern's periodic rescue on the worker (both of which may
// open transactions of their own on a slow machine) cannot be mistaken for
// the run's statements.
func TestRoundTripsOfOneBackgroundRun(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)
	submitLog, submitDB := tracedDB(t, ctx, url)
	workerLog, workerDB := tracedDB(t, ctx, url)
	observer := kerntest.Open(t, url) // waits without touching the traced pools

	_, model := kerntest.Model(t)
	submitter := &agent.Agent{Name: "counted", Model: model, DB: submitDB}
	executor := &agent.Agent{Name: "counted", Model: model, DB: workerDB}
	// Heartbeats and rescue are periodic, not per run: push them out of the
	// counted window.
	kerntest.Worker(t, workerDB, agent.WorkerConfig{
		FetchCooldown: time.Millisecond, FetchPollInterval: 50 * time.Millisecond,
		RescueAfter: time.Hour, HeartbeatInterval: 20 * time.Minute,
	}, executor)
	// Let the worker's start-up statements pass before counting.
	warm, err := submitter.Run(ctx, "warm up", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := observer.WaitRun(ctx, warm.RunID); err != nil {
		t.Fatal(err)
	}
	waitJobsCompleted(t, ctx, observer, 1)
	submitLog.reset()
	workerLog.reset()

	out, err := submitter.Run(ctx, "What is the capital of France?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final, err := observer.WaitRun(ctx, out.RunID)
	if err != nil || final.Status != run.StatusCompleted {
		t.Fatalf("run ended %v, %v", final, err)
	}
	waitJobsCompleted(t, ctx, observer, 2)

	submitted, worked := submitLog.count(), workerLog.count()
	t.Logf("statements of the submit:\n%s\nstatements of the worker until River's completion:\n%s",
		submitted, worked)
	// The submit is one statement, its own transaction: the run and its
	// job. The workers' notification follows it from the notifier's
	// goroutine, not on the submitter's path.
	kernsSubmit := maps.Clone(submitted.byName)
	if n := kernsSubmit["kern: notify workers"]; n > 1 {
		t.Errorf("submit: %d notifications for one run", n)
	}
	delete(kernsSubmit, "kern: notify workers")
	wantSubmit := map[string]int{"kern: insert run": 1}
	if !maps.Equal(kernsSubmit, wantSubmit) {
		t.Errorf("submit: got %v, want exactly %v (and the workers' notification)", submitted.byName, wantSubmit)
	}
	for name, want := range map[string]int{
		"kern: start runs": 1, "kern: append contents": 0, "kern: finish runs": 1,
	} {
		if worked.byName[name] != want {
			t.Errorf("worker: %s: %d round trips, want %d", name, worked.byName[name], want)
		}
	}
	if worked.byName["river: JobGetAvailable"] < 1 || worked.byName["river: JobSetStateIfRunningMany"] < 1 {
		t.Errorf("worker: River's fetch or completion missing: %v", worked.byName)
	}
	for name := range worked.byName {
		if strings.HasPrefix(name, "kern: unknown: ") {
			t.Errorf("worker: a statement of kern's this test does not know: %q", name)
		}
	}
}

// tracedDB opens a kern DB on its own pool whose statements are logged.
func tracedDB(t *testing.T, ctx context.Context, url string) (*statementLog, *db.DB) {
	t.Helper()
	log := &statementLog{}
	return log, dbWithTracer(t, ctx, url, log)
}

// dbWithTracer opens a kern DB on its own pool with tracer on every
// connection, closed when the test ends.
func dbWithTracer(t *testing.T, ctx context.Context, url string, tracer pgx.QueryTracer) *db.DB {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(kerntest.WithPoolSize(url, kerntest.TestPoolSize))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	traced, err := db.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(traced.Close)
	return traced
}

// waitJobsCompleted polls until n River jobs are completed.
func waitJobsCompleted(t *testing.T, ctx context.Context, d *db.DB, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, "River to complete the jobs", func() bool {
		var done int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'completed'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		return done >= n
	})
}
