package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// sqlHandOffLock locks execution $2 of running run $1 and reads what the
// handoff needs: the agent it leaves and the run's priority.
const sqlHandOffLock = `SELECT agent_name, priority FROM kern_run
WHERE id = $1 AND execution = $2 AND status = 'running' FOR UPDATE`

// sqlHandOff moves the locked run to agent $3 with job $4: pending again,
// its content afresh (the next agent's answer is the run's), the attempt
// given back (a handoff is no failure), and a run.handoff event.
const sqlHandOff = `
WITH moved AS (
	UPDATE kern_run SET agent_name = $3, job_id = $4, status = 'pending', content = '',
		attempt = attempt - 1, heartbeat_at = NULL, event_seq = event_seq + 1
	WHERE id = $1 AND execution = $2 AND status = 'running'
	RETURNING id, event_seq
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.handoff', jsonb_build_object('from', $5::text, 'to', $3::text) FROM moved`

// HandOff implements engine.Store: in one transaction, fenced by the
// execution, the run gets a job on agent to's queue (with the run's
// priority) and moves to it. Exactly once: a second try of the same
// execution finds the run pending and changes nothing (run.ErrNotRunning).
func (d engineDB) HandOff(ctx context.Context, f engine.Fence, to string) error {
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		var from string
		var priority int
		if err := tx.QueryRow(ctx, sqlHandOffLock, f.RunID, f.Execution).Scan(&from, &priority); err != nil {
			return err
		}
		job, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: f.RunID, AgentName: to}, &river.InsertOpts{Priority: priority})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, sqlHandOff, f.RunID, f.Execution, to, job.Job.ID, from)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("kern: hand off run %q: %w", idOf(f.RunID), run.ErrNotRunning)
	}
	if err != nil {
		return fmt.Errorf("kern: hand off run %q: %w", idOf(f.RunID), err)
	}
	return nil
}
