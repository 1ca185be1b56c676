package db_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
)

// Runs submitted by the release that had one queue for all agents are moved
// to their agents' queues by Migrate, so the workers that serve them fetch
// them; finished jobs are left where they are.
func TestMigrateMovesLegacyJobsToTheirAgentsQueues(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for _, r := range []struct{ id, agent string }{{"a1", "assistant"}, {"a2", "assistant"}, {"w1", "Writer Bot"}, {"done", "assistant"}} {
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: r.id, AgentName: r.agent, Input: "x", Enqueue: true}); err != nil {
			t.Fatal(err)
		}
	}
	// What the old release wrote: every run on queue "kern".
	if _, err := d.Pool().Exec(ctx, `UPDATE river_job SET queue = $1`, engine.LegacyQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE args->>'run_id' = 'done'`); err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := d.Pool().Query(ctx, `SELECT args->>'run_id', args->>'agent', queue FROM river_job`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, agentName, queue string
		if err := rows.Scan(&id, &agentName, &queue); err != nil {
			t.Fatal(err)
		}
		want := engine.QueueFor(agentName)
		if id == "done" {
			want = engine.LegacyQueue
		}
		if queue != want {
			t.Errorf("job of run %s (agent %q) is on queue %q, want %q", id, agentName, queue, want)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 4 {
		t.Fatalf("read %d jobs, err %v", n, err)
	}
}
