package db

import (
	"context"
	"fmt"
	"time"

	"github.com/kern-go/kern/run"
)

// Waking a key's next runs when one ends
//
// A run its concurrency key holds back is put back on its job (a River
// snooze, engine.ErrKeyBusy), and River makes a short snooze available
// again at once but scheduled for later: the job is only fetched again at
// its workers' next fetch, which without other work is their poll (a
// second). A key's backlog drained at a run a second that way.
// So when a keyed run ends, its worker wakes the runs whose turn it now is
// (WakeKey): their jobs are due now, and their queues' workers are told at
// once, with River's insert notification.

// wakeKeyTries bounds how often WakeKey looks again for a next run whose
// job River still has running: a claim that read the key full just before
// the slot freed, and whose snooze River has not recorded yet.
const (
	wakeKeyTries = 60
	wakeKeyPause = 5 * time.Millisecond
)

// sqlWakeKey wakes the first $2 due pending runs of the key (tenant and
// concurrency key) of run $1, once $1 no longer runs: their River jobs,
// waiting out a snooze (available, or scheduled, for later), are made due,
// and their queues notified. Due as of their creation, not now: River
// fetches a queue's due jobs in (priority, scheduled_at, id) order, and the
// key's other held-back runs, whose snoozes ended a moment ago, would
// otherwise come first — a fetch of MaxWorkers jobs, all refused, per
// dozen runs of the backlog. kern_run_concurrency_idx serves the
// runs. It returns how many jobs it woke and how many of the next runs'
// jobs River has running still.
const sqlWakeKey = `
WITH ended AS (
	SELECT tenant_id, concurrency_key FROM kern_run
	WHERE id = $1 AND concurrency_key IS NOT NULL AND status <> 'running'
), next AS (
	SELECT n.job_id FROM ended e CROSS JOIN LATERAL (
		SELECT r.job_id FROM kern_run r
		WHERE r.tenant_id = e.tenant_id AND r.concurrency_key = e.concurrency_key AND r.status = 'pending'
		  AND (r.heartbeat_at IS NULL OR r.heartbeat_at <= now()) AND r.job_id IS NOT NULL
		ORDER BY r.created_at, r.id
		LIMIT $2) n
), woken AS (
	UPDATE river_job SET state = 'available', scheduled_at = LEAST(created_at, now())
	WHERE id IN (SELECT job_id FROM next) AND state IN ('available', 'scheduled')
	RETURNING queue
), notified AS (
	SELECT pg_notify(current_schema() || '.river_insert', json_build_object('queue', queue)::text)
	FROM (SELECT DISTINCT queue FROM woken) q
)
SELECT (SELECT count(*) FROM notified),
	(SELECT count(*) FROM woken),
	(SELECT count(*) FROM river_job j WHERE j.id IN (SELECT job_id FROM next) AND j.state = 'running')`

// WakeKey implements engine.Store: after run runID, which has ended, left
// its key's slot (terminal, waiting, or pending for a retry), the first n
// runs of its key whose turn it may now be are fetched at once instead of
// at their workers' next poll. A run without a key wakes nothing. A next
// run whose job River still has running (refused a moment ago, its snooze
// not recorded yet) is looked at again for a little while; failing that,
// it starts at its workers' next poll, as before.
func (d engineDB) WakeKey(ctx context.Context, runID string, n int) error {
	if n <= 0 {
		return fmt.Errorf("kern: %w: wake %d runs of a key", run.ErrInvalidArgument, n)
	}
	for try := 0; ; try++ {
		var notified, woken, running int
		if err := d.pool.QueryRow(ctx, sqlWakeKey, runID, n).Scan(&notified, &woken, &running); err != nil {
			return fmt.Errorf("kern: wake the next runs of run %q's key: %w", idOf(runID), err)
		}
		if running == 0 || try+1 >= wakeKeyTries {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wakeKeyPause):
		}
	}
}
