package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
)

// Bounds of one rescue: it reads about this many rows whatever the size of
// the table or of the pending backlog.
const (
	// sweepPage is how many runs one rescue's sweep looks at.
	sweepPage = 100
	// finalizedWindow is how far back (before staleAfter) a discarded or
	// cancelled job is looked at by job: they are rare, but River keeps them
	// for days, and a rescue must not read days of them on every tick. An
	// orphan of an older one is found by the sweep.
	finalizedWindow = time.Hour
)

// RescueStale finds running runs whose heartbeat is older than staleAfter —
// their worker was killed, or is cut off from Postgres — and hands each to
// another worker with a new job (counted as an attempt), or ends it as error
// when it has had maxAttempts already. It also re-queues orphaned pending
// runs, which nobody would start: their job was lost before it started them
// (a worker killed between taking the job and claiming the run, a job that
// ended, a job row deleted), or their foreground caller died before it
// started them. Any number of workers may call it at once: each run is
// rescued once. The dead attempt is fenced out: its writes, should it wake
// up, match no row.
//
// The work of one call is bounded: running runs are as many as the fleet
// runs at once, and orphans are looked for from the job side and among the
// live foreground runs, plus one page of the sweep (see sqlOrphanedRuns);
// a backlog of pending runs waiting for busy workers is never rescanned.
//
// River's own rescuer would only retry the job after RescueStuckJobsAfter
// (an hour by default, and it must exceed the job timeout); heartbeats make
// recovery independent of the timeout. For the same reason it makes the
// completion and webhook jobs of workers whose session ended available
// again (sqlRescueHookJobs).
func (d engineDB) RescueStale(ctx context.Context, staleAfter time.Duration, maxAttempts int) (engine.Rescued, error) {
	var res engine.Rescued
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		res = engine.Rescued{}
		rows, err := tx.Query(ctx, sqlStaleRuns, staleAfter.Seconds())
		if err != nil {
			return err
		}
		type stale struct {
			ID, AgentName string
			Attempt       int
			Priority      int
			SessionEnded  bool
		}
		runs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stale])
		if err != nil {
			return err
		}
		if res.Expired, err = expireWaits(ctx, tx); err != nil {
			return fmt.Errorf("expire waits: %w", err)
		}
		var notified int
		if err := tx.QueryRow(ctx, sqlRescueHookJobs).Scan(&res.HookJobs, &notified); err != nil {
			return fmt.Errorf("completion and webhook jobs of dead workers: %w", err)
		}
		swept, err := sweep(ctx, tx, staleAfter)
		if err != nil {
			return fmt.Errorf("sweep: %w", err)
		}
		orphanRows, err := tx.Query(ctx, sqlOrphanedRuns, staleAfter.Seconds(), finalizedWindow.Seconds(), swept)
		if err != nil {
			return err
		}
		type orphan struct {
			ID, AgentName string
			Attempt       int
			Foreground    bool
			Priority      int
		}
		orphans, err := pgx.CollectRows(orphanRows, pgx.RowToStructByPos[orphan])
		if err != nil {
			return err
		}
		for _, r := range orphans {
			msg := fmt.Sprintf("job lost before the run started (attempt %d of %d so far)", r.Attempt, maxAttempts)
			if r.Foreground {
				msg = fmt.Sprintf("the foreground run's caller went away before starting it (attempt %d of %d so far)", r.Attempt, maxAttempts)
			}
			if err := d.requeue(ctx, tx, r.ID, r.AgentName, r.Priority, msg); err != nil {
				return err
			}
			res.Requeued = append(res.Requeued, r.ID)
		}
		for _, r := range runs {
			// The message names the rule that fired: a run whose worker's
			// session ended may have heartbeated a moment ago.
			msg := fmt.Sprintf("worker lost: no heartbeat for %v (attempt %d of %d)", staleAfter, r.Attempt, maxAttempts)
			if r.SessionEnded {
				msg = fmt.Sprintf("worker lost: its Postgres session ended (attempt %d of %d)", r.Attempt, maxAttempts)
			}
			if r.Attempt >= maxAttempts {
				if _, err := tx.Exec(ctx, sqlFailRun, r.ID, msg); err != nil {
					return err
				}
				res.Failed = append(res.Failed, r.ID)
				continue
			}
			if err := d.requeue(ctx, tx, r.ID, r.AgentName, r.Priority, msg); err != nil {
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

// sweep looks at the next page of runs after the fleet's shared cursor,
// moves the cursor on (back to the start after the last page), and returns
// the orphans it found, for sqlOrphanedRuns to lock and check again. When
// another rescuer holds the cursor, this one skips its turn.
func sweep(ctx context.Context, tx pgx.Tx, staleAfter time.Duration) ([]string, error) {
	var after string
	err := tx.QueryRow(ctx, sqlSweepCursor).Scan(&after)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, sqlSweepPage, staleAfter.Seconds(), after, sweepPage)
	if err != nil {
		return nil, err
	}
	type swept struct {
		ID       string
		Orphaned bool
	}
	page, err := pgx.CollectRows(rows, pgx.RowToStructByPos[swept])
	if err != nil {
		return nil, err
	}
	var orphans []string
	for _, r := range page {
		if r.Orphaned {
			orphans = append(orphans, r.ID)
		}
	}
	next := ""
	if len(page) == sweepPage {
		next = page[len(page)-1].ID
	}
	if _, err := tx.Exec(ctx, sqlSweepAdvance, next); err != nil {
		return nil, err
	}
	return orphans, nil
}

// requeue gives the run a new job, with the run's priority, and puts it
// back to pending.
func (d *DB) requeue(ctx context.Context, tx pgx.Tx, runID, agentName string, priority int, msg string) error {
	job, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: runID, AgentName: agentName}, &river.InsertOpts{Priority: priority})
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, sqlRequeueRun, runID, msg, job.Job.ID)
	return err
}
