package db_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// historian is the method History adds to the engine's Store; until
// engine.Store declares it, the tests reach it through an assertion, as the
// executor would.
type historian interface {
	History(ctx context.Context, sessionID, agentName, beforeRunID string, n int) ([]db.HistoryEntry, error)
}

func historyOf(t *testing.T, d *db.DB) historian {
	t.Helper()
	h, ok := d.Engine(engine.Key{}).(historian)
	if !ok {
		t.Fatal("the engine store has no History method")
	}
	return h
}

// sessionRun describes a run to create for a history test.
type sessionRun struct {
	id, session, agent string
	status             run.Status // pending, running or a terminal status
	content            string
}

// makeRuns creates the runs one after the other, so created_at follows the
// order given, and takes each to its status as a foreground execution.
func makeRuns(t *testing.T, ctx context.Context, d *db.DB, runs ...sessionRun) {
	t.Helper()
	for _, r := range runs {
		makeRun(t, ctx, d, r)
	}
}

func makeRun(t *testing.T, ctx context.Context, d *db.DB, r sessionRun) {
	t.Helper()
	if err := tryMakeRun(ctx, d, r); err != nil {
		t.Fatal(err)
	}
}

// tryMakeRun is makeRun for goroutines other than the test's.
func tryMakeRun(ctx context.Context, d *db.DB, r sessionRun) error {
	if r.agent == "" {
		r.agent = "a"
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: r.id, SessionID: r.session, AgentName: r.agent, Input: "q-" + r.id}); err != nil {
		return fmt.Errorf("submit %s: %w", r.id, err)
	}
	if r.status == run.StatusPending {
		return nil
	}
	s := d.Engine(engine.Key{})
	claim, err := s.StartRun(ctx, r.id, nil)
	if err != nil {
		return fmt.Errorf("start %s: %w", r.id, err)
	}
	if r.status == run.StatusRunning {
		return nil
	}
	fin := engine.Finish{Status: r.status, Tail: r.content}
	if r.status == run.StatusError {
		fin.Error = "model returned HTTP 400: too long"
	}
	if err := s.FinishRun(ctx, claim.Fence, fin); err != nil {
		return fmt.Errorf("finish %s: %w", r.id, err)
	}
	return nil
}

// entry is the HistoryEntry that makeRun's run id gives.
func entry(id string, status run.Status, content string) db.HistoryEntry {
	return db.HistoryEntry{Input: "q-" + id, Content: content, Status: status}
}

func checkHistory(t *testing.T, got []db.HistoryEntry, err error, want ...db.HistoryEntry) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("history:\n got  %+v\n want %+v", got, want)
	}
}

func TestHistoryOfOneSessionAndAgentInOrder(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	makeRuns(t, ctx, d,
		sessionRun{id: "h01", session: "s1", status: run.StatusCompleted, content: "first answer"},
		sessionRun{id: "h02", session: "s2", status: run.StatusCompleted, content: "other session"},
		sessionRun{id: "h03", session: "s1", agent: "b", status: run.StatusCompleted, content: "other agent"},
		sessionRun{id: "h04", session: "s1", status: run.StatusCancelled, content: "cut sh"},
		sessionRun{id: "h05", session: "s1", status: run.StatusError, content: "partial before the error"},
		sessionRun{id: "h06", session: "s1", status: run.StatusCompleted, content: ""},
		sessionRun{id: "h07", session: "s1", status: run.StatusCancelled, content: ""},
		sessionRun{id: "h08", session: "s1", status: run.StatusPending},
		sessionRun{id: "h09", session: "s1", status: run.StatusRunning},
		sessionRun{id: "h10", session: "", status: run.StatusCompleted, content: "no session"},
		sessionRun{id: "h11", session: "s1", status: run.StatusCompleted, content: "last answer"},
		sessionRun{id: "cur", session: "s1", status: run.StatusRunning},
		// Created after the current run: not before it, even once finished.
		sessionRun{id: "h12", session: "s1", status: run.StatusCompleted, content: "later"},
	)
	h := historyOf(t, d)

	got, err := h.History(ctx, "s1", "a", "cur", 10)
	checkHistory(t, got, err,
		entry("h01", run.StatusCompleted, "first answer"),
		entry("h04", run.StatusCancelled, "cut sh"),
		entry("h11", run.StatusCompleted, "last answer"))

	t.Run("another agent", func(t *testing.T) {
		got, err := h.History(ctx, "s1", "b", "cur", 10)
		checkHistory(t, got, err, entry("h03", run.StatusCompleted, "other agent"))
	})
	t.Run("another session", func(t *testing.T) {
		got, err := h.History(ctx, "s3", "a", "cur", 10)
		checkHistory(t, got, err)
		got, err = h.History(ctx, "s2", "a", "h12", 10)
		checkHistory(t, got, err, entry("h02", run.StatusCompleted, "other session"))
	})
	t.Run("no session", func(t *testing.T) {
		// Sessionless runs are not one conversation.
		got, err := h.History(ctx, "", "a", "cur", 10)
		checkHistory(t, got, err)
	})
	t.Run("before an earlier run", func(t *testing.T) {
		got, err := h.History(ctx, "s1", "a", "h04", 10)
		checkHistory(t, got, err, entry("h01", run.StatusCompleted, "first answer"))
		got, err = h.History(ctx, "s1", "a", "h01", 10)
		checkHistory(t, got, err)
	})
	t.Run("unknown current run", func(t *testing.T) {
		got, err := h.History(ctx, "s1", "a", "nope", 10)
		checkHistory(t, got, err)
	})
}

func TestHistoryLimit(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for i := range 5 {
		makeRun(t, ctx, d, sessionRun{id: fmt.Sprintf("r%d", i), session: "s", status: run.StatusCompleted, content: fmt.Sprint("a", i)})
		// Left out, and not counted against the limit.
		makeRun(t, ctx, d, sessionRun{id: fmt.Sprintf("e%d", i), session: "s", status: run.StatusError})
	}
	makeRun(t, ctx, d, sessionRun{id: "cur", session: "s", status: run.StatusRunning})
	h := historyOf(t, d)

	got, err := h.History(ctx, "s", "a", "cur", 2)
	checkHistory(t, got, err, entry("r3", run.StatusCompleted, "a3"), entry("r4", run.StatusCompleted, "a4"))
	got, err = h.History(ctx, "s", "a", "cur", 1)
	checkHistory(t, got, err, entry("r4", run.StatusCompleted, "a4"))
	got, err = h.History(ctx, "s", "a", "cur", 0)
	checkHistory(t, got, err)
	got, err = h.History(ctx, "s", "a", "cur", db.MaxHistoryRuns)
	if err != nil || len(got) != 5 {
		t.Fatalf("history of up to %d runs: %d entries, %v; want 5", db.MaxHistoryRuns, len(got), err)
	}
	for _, n := range []int{-1, db.MaxHistoryRuns + 1} {
		if _, err := h.History(ctx, "s", "a", "cur", n); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("History(n=%d) err = %v, want run.ErrInvalidArgument", n, err)
		}
	}
}

// Runs are rows of their own, not entries of a session document: fifty
// runs of one session submitted at once, and fifty finishing at once, all
// stay, none overwriting another.
func TestHistoryFiftyConcurrentRunsInOneSession(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, time.Minute)
	const n = 50

	// Background submits (run row and job in one transaction), all at once.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = d.SubmitRun(ctx, db.SubmitParams{
				RunID: fmt.Sprintf("bg-%02d", i), SessionID: "busy", AgentName: "a", Input: "hi", Enqueue: true,
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var rows, jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE session_id = 'busy'`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'run_id' LIKE 'bg-%'`).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if rows != n || jobs != n {
		t.Fatalf("%d concurrent submits in one session: %d runs, %d jobs", n, rows, jobs)
	}

	// Runs of another session that execute and finish concurrently: every
	// answer is in the next run's history.
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("fg-%02d", i)
			errs[i] = tryMakeRun(ctx, d, sessionRun{id: id, session: "chat", status: run.StatusCompleted, content: "answer " + id})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	makeRun(t, ctx, d, sessionRun{id: "next", session: "chat", status: run.StatusRunning})
	got, err := historyOf(t, d).History(ctx, "chat", "a", "next", db.MaxHistoryRuns)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range got {
		if e.Status != run.StatusCompleted || e.Content != "answer "+e.Input[len("q-"):] {
			t.Fatalf("history entry %+v", e)
		}
		seen[e.Input] = true
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("history after %d concurrent runs: %d entries (%d distinct)", n, len(got), len(seen))
	}
}

// History reads about n rows, however long the session and wherever in it
// the current run is, also for a small session among a few huge ones: the
// statistics then make session_id = $1 look unselective, and a generic plan
// would walk kern_run_created_idx through the other sessions' runs. History
// is planned for each call's session instead (historyExecMode), which keeps
// it on kern_run_session_idx with no index of its own; the test also checks
// that it leaves no prepared statement behind whose plan could go generic.
func TestHistoryReadsAboutNRows(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)
	populate(t, ctx, url, func(d *db.DB) {
		// One session of 20,000 runs; five of 200 each, spread over the
		// same hours.
		if _, err := d.Pool().Exec(ctx, `
			INSERT INTO kern_run (id, session_id, agent_name, input, content, status, created_at, finished_at)
			SELECT 'r-' || i, CASE WHEN i % 20 = 0 THEN 's' || (i / 20 % 5) ELSE 'long' END, 'a', 'q', 'answer', 'completed',
				now() - make_interval(secs => 21000 - i), now() - make_interval(secs => 21000 - i)
			FROM generate_series(1, 21000) i;
			ANALYZE kern_run`); err != nil {
			t.Fatal(err)
		}
	})
	reader := kerntest.Open(t, kerntest.WithPoolSize(url, 1))
	h := historyOf(t, reader)
	const n = 10
	for _, c := range []struct{ session, before string }{
		{"long", "r-20999"}, {"long", "r-10001"}, {"long", "r-21"}, {"s0", "r-20000"}, {"s3", "r-10060"},
	} {
		// Enough executions for Postgres to consider a generic plan.
		for range 6 {
			if _, err := h.History(ctx, c.session, "a", c.before, n); err != nil {
				t.Fatal(err)
			}
		}
		before := rowsRead(t, ctx, reader)["kern_run"]
		got, err := h.History(ctx, c.session, "a", c.before, n)
		if err != nil {
			t.Fatal(err)
		}
		read := rowsRead(t, ctx, reader)["kern_run"] - before
		if len(got) != n {
			t.Fatalf("%s before %s: %d entries, want %d", c.session, c.before, len(got), n)
		}
		if read > n+5 {
			t.Fatalf("%s before %s: read %d rows for a history of %d", c.session, c.before, read, n)
		}
	}
	var prepared int
	if err := reader.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE strpos(statement, 'CROSS JOIN ' || 'LATERAL') > 0`).Scan(&prepared); err != nil {
		t.Fatal(err)
	}
	if prepared != 0 {
		t.Fatalf("History left %d prepared statements: a generic plan may read through other sessions' runs", prepared)
	}
}
