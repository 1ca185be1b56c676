package db

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
)

// RescueStale finds running runs whose heartbeat is older than staleAfter —
// their worker was killed, or is cut off from Postgres — and hands each to
// another worker with a new job (counted as an attempt), or ends it as error
// when it has had maxAttempts already. It also re-queues pending runs whose
// job was lost before it could start them (a worker killed between taking
// the job and claiming the run). Any number of workers may call it at
// once: each stale run is rescued once. The dead attempt is fenced out: its
// writes, should it wake up, match no row.
//
// River's own rescuer would only retry the job after RescueStuckJobsAfter
// (an hour by default, and it must exceed the job timeout); heartbeats make
// recovery independent of the timeout.
func (d engineDB) RescueStale(ctx context.Context, staleAfter time.Duration, maxAttempts int) (engine.Rescued, error) {
	var res engine.Rescued
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sqlStaleRuns, staleAfter.Seconds())
		if err != nil {
			return err
		}
		type stale struct {
			ID, AgentName string
			Attempt       int
		}
		runs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stale])
		if err != nil {
			return err
		}
		orphanRows, err := tx.Query(ctx, sqlOrphanedRuns, staleAfter.Seconds())
		if err != nil {
			return err
		}
		orphans, err := pgx.CollectRows(orphanRows, pgx.RowToStructByPos[stale])
		if err != nil {
			return err
		}
		for _, r := range orphans {
			msg := fmt.Sprintf("job lost before the run started (attempt %d of %d so far)", r.Attempt, maxAttempts)
			if err := d.requeue(ctx, tx, r.ID, r.AgentName, msg); err != nil {
				return err
			}
			res.Requeued = append(res.Requeued, r.ID)
		}
		for _, r := range runs {
			msg := fmt.Sprintf("worker lost: no heartbeat for %v (attempt %d of %d)", staleAfter, r.Attempt, maxAttempts)
			if r.Attempt >= maxAttempts {
				if _, err := tx.Exec(ctx, sqlFailRun, r.ID, msg); err != nil {
					return err
				}
				res.Failed = append(res.Failed, r.ID)
				continue
			}
			if err := d.requeue(ctx, tx, r.ID, r.AgentName, msg); err != nil {
				return err
			}
			res.Requeued = append(res.Requeued, r.ID)
		}
		return nil
	})
	if err != nil {
		return engine.Rescued{}, fmt.Errorf("kern: rescue stale runs: %w", err)
	}
	return res, nil
}

// requeue gives the run a new job and puts it back to pending.
func (d *DB) requeue(ctx context.Context, tx pgx.Tx, runID, agentName, msg string) error {
	job, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: runID, AgentName: agentName}, nil)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, sqlRequeueRun, runID, msg, job.Job.ID)
	return err
}
