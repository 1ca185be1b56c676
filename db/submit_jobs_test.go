package db_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
)

// Batched submits insert their River jobs with kern's own statement
// (sqlSubmitRuns), not River's client. Their rows must be exactly what
// River's InsertTx writes for the same run (a submit in the caller's
// transaction still goes through River), column for column but the id and
// the times, so a River upgrade that changes its job rows fails here.
func TestBatchedSubmitJobRowsAreRiversOwn(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	traced := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	}))
	cases := []struct {
		name string
		ctx  context.Context
		p    db.SubmitParams
		// riverState, when set, is the state River gives the job where
		// kern's differs on purpose: River makes any job with a
		// ScheduledAt "scheduled" (its scheduler makes it available within
		// seconds); kern makes one whose start has passed available now.
		riverState string
	}{
		{"plain", ctx, db.SubmitParams{AgentName: "Writer", Input: "hi", Enqueue: true}, ""},
		{"priority, later start, trace", traced, db.SubmitParams{AgentName: "writer two", Input: "hi", Enqueue: true,
			Priority: 1, StartAt: time.Now().Add(time.Hour)}, ""},
		{"start in the past", ctx, db.SubmitParams{AgentName: "w", Input: "hi", Enqueue: true, Priority: 4,
			StartAt: time.Now().Add(-time.Minute), ConcurrencyKey: "k"}, "scheduled"},
	}
	for i, c := range cases {
		batched, inTx := c.p, c.p
		batched.RunID = "batched-" + string(rune('a'+i))
		inTx.RunID = "in-tx-" + string(rune('a'+i))
		if _, err := d.SubmitRun(c.ctx, batched); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		tx, err := d.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inTx.Tx = tx
		if _, err := d.SubmitRun(c.ctx, inTx); err != nil {
			t.Fatalf("%s in a transaction: %v", c.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		row := func(runID string) (job string, jobID, runJobID int64) {
			t.Helper()
			err := d.Pool().QueryRow(ctx, `
SELECT (to_jsonb(j) - 'id' - 'created_at' - 'scheduled_at' - 'args'
		|| jsonb_build_object('args', j.args - 'run_id', 'scheduled_later', j.scheduled_at > now()))::text,
	j.id, r.job_id
FROM river_job j JOIN kern_run r ON r.id = j.args->>'run_id'
WHERE j.args->>'run_id' = $1`, runID).Scan(&job, &jobID, &runJobID)
			if err != nil {
				t.Fatalf("%s: job of %s: %v", c.name, runID, err)
			}
			return job, jobID, runJobID
		}
		got, jobID, runJobID := row(batched.RunID)
		want, _, _ := row(inTx.RunID)
		if c.riverState != "" {
			want = strings.Replace(want, `"state": "`+c.riverState+`"`, `"state": "available"`, 1)
		}
		if got != want {
			t.Errorf("%s: kern's job row\n%s\nRiver's\n%s", c.name, got, want)
		}
		if jobID != runJobID {
			t.Errorf("%s: run's job_id %d, its job is %d", c.name, runJobID, jobID)
		}
	}
}
