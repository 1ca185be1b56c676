package db

import "strings"

// Every SQL statement kern runs lives in this file, but for the transcript's
// (queries_transcript.go); the schema is in ../migrations. Statements that
// change a run are conditional on its status and, for a worker's writes, on
// its execution: see the package doc for why that makes cancel and
// completion safe against each other.

// runDurationUs is a run's Duration as its terminal write stores it (a
// statement's now() is its finished_at): from its first start to its end,
// as Postgres dated both; 0 for a run that never started.
const runDurationUs = `COALESCE((extract(epoch FROM now() - started_at) * 1000000)::bigint, 0)`

// runColumns is the column list scanned by scanRun, in struct order.
const runColumns = `id, session_id, agent_name, name, status, input, content, error, metadata,
	attempt, timeout_ms, input_tokens, output_tokens, total_tokens, ttft_us, duration_us,
	model_turns, tool_calls, created_at, started_at, finished_at,
	CASE WHEN status = 'waiting' THEN waiting_calls ELSE '[]' END AS waiting_calls, wait_timeout_ms, ` + runWebhookColumn + `, tenant_id,
	COALESCE(parent_run_id, '') AS parent_run_id`

// sqlInsertRun inserts one run in a transaction of the caller's or a
// schedule's, its job inserted by River before it (batched submits use
// sqlSubmitRuns). A child run names its parent's key and its depth ($15,
// $16; NULL and 0 for a top-level run), both found by parentOf. A
// foreground run (no job, $8) starts with a heartbeat: its caller is alive now, and the rescuer takes it
// only once that is stale (the caller died before starting it). A delayed
// background run's heartbeat_at is its start time ($13, NULL for none): a
// pending run's heartbeat_at is when it is due (see sqlRetryRun), which
// the per-key order reads (kern_refused_by_key). The run keeps its job's
// priority, for the jobs it gets later (a foreground run: 2, the default).
const sqlInsertRun = `
INSERT INTO kern_run (id, session_id, agent_name, name, input, metadata, timeout_ms, job_id, idempotency_key, wait_timeout_ms,
	concurrency_key, webhook_url, heartbeat_at, tenant_id, priority, parent_run_id, depth)
VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8, $9, $10, $11, $12,
	CASE WHEN $8::bigint IS NULL THEN now() ELSE $13::timestamptz END, $14,
	COALESCE((SELECT priority FROM river_job WHERE id = $8), 2), $15, $16)
RETURNING ` + runColumns

// sqlClaimRefused tells why a claim did not start a run ($1) for its job
// ($2): it is still pending for that job, with a concurrency key, and so was
// refused by its key's limit or turn; no row means no run.
const sqlClaimRefused = `SELECT status = 'pending' AND job_id IS NOT DISTINCT FROM $2 AND concurrency_key IS NOT NULL
FROM kern_run WHERE id = $1`

// sqlGetByIdempotencyKey finds the run an earlier submit with the same key
// created.
const sqlGetByIdempotencyKey = `SELECT ` + runColumns + ` FROM kern_run WHERE tenant_id = $3 AND agent_name = $1 AND idempotency_key = $2`

var sqlGetRun = `SELECT ` + runReadColumns + ` FROM kern_run WHERE id = $1`

// runReadColumns is runColumns as reads show them: a background run that
// waits with no error of its own says why when no live worker serves its
// agent, or when runs of its concurrency key (its tenant's) are running, so
// it is visibly waiting rather than silently pending.
var runReadColumns = strings.Replace(runColumns, "error,", `CASE
		WHEN status = 'pending' AND error = '' AND job_id IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM kern_worker w WHERE agent_name = ANY (w.agents) AND w.expires_at > now())
		THEN 'no running worker serves agent "' || agent_name || '"; the run starts when one does'
		WHEN status = 'pending' AND error = '' AND concurrency_key IS NOT NULL AND EXISTS (
			SELECT 1 FROM kern_run o WHERE o.tenant_id = kern_run.tenant_id AND o.concurrency_key = kern_run.concurrency_key
			  AND o.status = 'running')
		THEN 'waits for a slot of its concurrency key (WorkerConfig.MaxRunsPerKey)'
		ELSE error END,`, 1)

// The four statements of a run's execution that every run makes, or makes
// often, are batched (see batcher): each takes arrays, one element per run,
// unnested into a req relation whose columns are prefixed "req_" so they
// never shadow kern_run's own. Each element is fenced on its own; the
// statement returns the ids it applied to.

// sqlStartRuns claims pending runs for a new execution. req_job is the River
// job executing it, NULL for a foreground run: only the run's current job
// may start it, so a stale job left over from a rescue cannot. A run moves
// to running, or straight to cancelled when a cancel request is on file.
// Content starts afresh, and the run.started event tells event readers to
// start afresh too. transcript_seq tells the worker whether stored steps
// (kern_run_step) are there to resume from, so a plain run needs no read.
//
// $3 is the MaxRunsPerKey of the worker claiming each run (0: no limit), or
// NULL when none has one: then the per-key limit costs nothing. Otherwise
// kern_refused_by_key (migrations/009) names the runs of a concurrency key
// whose key is full or whose turn it is not (an older pending run of the
// key comes first); they stay pending. It runs in req, before this
// statement locks any row, and its advisory locks are held until the claim
// commits. A run with a cancel request is let through: it ends cancelled.
const sqlStartRuns = `
WITH req AS (
	SELECT r.*, k.refused AS req_refused, EXISTS (
		SELECT 1 FROM kern_run_cancel c WHERE c.run_id = r.req_id) AS req_cancelled
	FROM unnest($1::text[], $2::bigint[], $4::text[]) AS r(req_id, req_job, req_worker),
		(SELECT CASE WHEN $3::int[] IS NULL THEN '{}' ELSE kern_refused_by_key($1, $3) END AS refused) k
), started AS (
	UPDATE kern_run SET
		status       = CASE WHEN req.req_cancelled THEN 'cancelled' ELSE 'running' END,
		attempt      = CASE WHEN req.req_cancelled THEN attempt ELSE attempt + 1 END,
		execution    = CASE WHEN req.req_cancelled THEN execution ELSE execution + 1 END,
		content      = CASE WHEN req.req_cancelled THEN content ELSE '' END,
		error        = '',
		started_at   = COALESCE(started_at, now()),
		heartbeat_at = now(),
		finished_at  = CASE WHEN req.req_cancelled THEN now() END,
		event_seq    = event_seq + 1,
		worker_id    = req.req_worker
	FROM req
	WHERE id = req.req_id AND status = 'pending' AND job_id IS NOT DISTINCT FROM req.req_job
	  AND (req.req_cancelled OR req.req_id <> ALL (req.req_refused))
	RETURNING ` + runColumns + `, execution, event_seq, transcript_seq
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, event_seq, CASE WHEN status = 'cancelled' THEN 'run.cancelled' ELSE 'run.started' END,
		CASE WHEN status = 'cancelled' THEN '{}'::jsonb
		ELSE jsonb_build_object('attempt', attempt, 'execution', execution) END
	FROM started
)
SELECT * FROM started` // started's RETURNING list (runColumns' expressions read columns only kern_run has)

// sqlAppendContents persists flushed chunks of streamed content, each with
// its content.delta event in the same statement: the events always add up
// to the content. Each chunk names the seq its event takes (req_seq), and
// applies only when the run's last event is the one before it: so sending
// a chunk again after an unknown outcome can never append it twice.
const sqlAppendContents = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[]) AS r(req_id, req_execution, req_seq, req_delta)
), appended AS (
	UPDATE kern_run SET content = content || req.req_delta, heartbeat_at = now(), event_seq = req.req_seq
	FROM req
	WHERE id = req.req_id AND execution = req.req_execution AND status = 'running' AND event_seq = req.req_seq - 1
	RETURNING id, event_seq, req.req_delta
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, event_seq, 'content.delta', jsonb_build_object('delta', req_delta) FROM appended
)
SELECT id FROM appended`

// sqlAppendApplied reads back whether a chunk that was not applied (or whose
// outcome is unknown) is in the run already: the execution still owns the
// running run and its events reached the chunk's seq. Only the owning
// execution writes events to a running run, so that event is the chunk.
const sqlAppendApplied = `
SELECT EXISTS (SELECT 1 FROM kern_run WHERE id = $1 AND execution = $2 AND status = 'running' AND event_seq >= $3)`

// sqlFinishRuns writes terminal statuses for the executions that own their
// runs, with the unflushed tail of the content and the terminal event: a
// content.delta for a non-empty tail, then run.completed, run.error or
// run.cancelled. The metrics are the run's totals, stored steps included;
// its duration is runDurationUs (req_duration_us, the execution's own, is
// not stored), and the time to first token a stored turn recorded stays.
const sqlFinishRuns = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],
		$6::int[], $7::int[], $8::int[], $9::bigint[], $10::bigint[], $11::int[], $12::int[])
	AS r(req_id, req_execution, req_status, req_tail, req_error,
		req_input_tokens, req_output_tokens, req_total_tokens, req_ttft_us, req_duration_us,
		req_model_turns, req_tool_calls)
), finished AS (
	UPDATE kern_run SET
		status        = req.req_status,
		content       = content || req.req_tail,
		error         = req.req_error,
		input_tokens  = req.req_input_tokens,
		output_tokens = req.req_output_tokens,
		total_tokens  = req.req_total_tokens,
		ttft_us       = CASE WHEN ttft_us > 0 THEN ttft_us ELSE req.req_ttft_us END,
		duration_us   = ` + runDurationUs + `,
		model_turns   = req.req_model_turns,
		tool_calls    = req.req_tool_calls,
		finished_at   = now(),
		event_seq     = event_seq + CASE WHEN req.req_tail = '' THEN 1 ELSE 2 END
	FROM req
	WHERE id = req.req_id AND execution = req.req_execution AND status = 'running'
	RETURNING id, event_seq, req.req_status, req.req_tail, req.req_error
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, event_seq - 1, 'content.delta', jsonb_build_object('delta', req_tail) FROM finished WHERE req_tail <> ''
	UNION ALL
	SELECT id, event_seq, 'run.' || req_status, jsonb_strip_nulls(jsonb_build_object('error', NULLIF(req_error, '')))
	FROM finished
)
SELECT id FROM finished`

// sqlHeartbeats tells rescuers the executions are alive. A run not
// returned was lost by its execution (cancelled, or rescued after a stall).
const sqlHeartbeats = `
UPDATE kern_run SET heartbeat_at = now()
FROM unnest($1::text[], $2::int[]) AS req(req_id, req_execution)
WHERE id = req.req_id AND execution = req.req_execution AND status = 'running'
RETURNING id`

// sqlReleaseRun hands a running run back to pending (worker shutdown), so
// another worker can take it. The attempt is given back too: a shutdown is
// not a failure and must not use up the run's attempts. The execution is
// not given back: it is the fence, and must never repeat.
const sqlReleaseRun = `
WITH released AS (
	UPDATE kern_run SET status = 'pending', content = '', attempt = attempt - 1,
		heartbeat_at = NULL, event_seq = event_seq + 1
	WHERE id = $1 AND execution = $2 AND status = 'running'
	RETURNING id, event_seq
)
INSERT INTO kern_run_event (run_id, seq, type)
SELECT id, event_seq, 'run.released' FROM released`

// sqlRetryRun puts a failed attempt's run back to pending for a retry, with
// the error visible until the next attempt starts, and a run.retrying event.
// heartbeat_at is set to when the retry is due ($4 ms from now): the run is
// looked after until then, so the rescuer leaves a foreground run waiting
// out its delay alone.
const sqlRetryRun = `
WITH retried AS (
	UPDATE kern_run SET status = 'pending', content = '', error = $3,
		heartbeat_at = now() + $4::bigint * interval '1 millisecond', event_seq = event_seq + 1
	WHERE id = $1 AND execution = $2 AND status = 'running'
	RETURNING id, event_seq, attempt
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.retrying',
	jsonb_build_object('attempt', attempt, 'error', $3::text, 'retry_in_ms', $4::bigint)
FROM retried`

// sqlStaleRuns locks running runs whose worker died or is cut off: their
// worker's session ended (session_ended; deadWorkers) or their heartbeat
// is older than $1 seconds. The dead workers are read once, into an
// array (an InitPlan): a correlated subquery would make the planner price
// a scan of pg_locks into every row and, on a table without statistics
// yet, pick a scan of every run over the index of running ones. SKIP
// LOCKED lets rescuers on many workers share the work without waiting on
// each other.
const sqlStaleRuns = `
WITH dead AS MATERIALIZED (SELECT ARRAY(` + deadWorkers + `) AS ids)
SELECT id, agent_name, attempt, priority, worker_id = ANY((SELECT ids FROM dead)::text[]) IS TRUE AS session_ended
FROM kern_run
WHERE status = 'running' AND (heartbeat_at < now() - make_interval(secs => $1)
	OR worker_id = ANY((SELECT ids FROM dead)::text[]))
ORDER BY heartbeat_at
LIMIT 100
FOR UPDATE SKIP LOCKED`

// A pending run is orphaned when nobody will start it: it has been left
// alone for longer than the rescuer's staleAfter ($1 seconds) — since it was
// created, since its last event (a retry, a hand-back, a rescue), and past
// heartbeat_at, which a foreground submit sets to now and a retry to when
// the retry is due — and its job cannot start it: there is none (a
// foreground run whose caller died, or a job row deleted by hand), the job
// has ended, or a worker took the job more than staleAfter ago and died
// before claiming the run (River itself would only rescue that job after an
// hour). The last event matters for that last case: a run handed back or
// put back for a retry a moment ago still has its old job running, until
// River records the job's snooze.
//
// It is a condition on a run r with its job j and its last event e (see
// orphanJoins), written as a CASE so that the planner cannot read the runs
// it applies to from a partial index of pending runs — which holds the whole
// backlog, and whose size the statistics may not know yet: they must come
// from the candidates, by primary key.
const orphanedRun = `CASE WHEN r.status = 'pending' THEN
	GREATEST(r.created_at, r.heartbeat_at, e.at) < now() - make_interval(secs => $1)
	AND (j.id IS NULL
	  OR j.state IN ('completed', 'discarded', 'cancelled')
	  OR (j.state = 'running' AND j.attempted_at < now() - make_interval(secs => $1)))
	ELSE false END`

// orphanJoins looks up a pending run's job and last event for orphanedRun,
// each by primary key, one run at a time (LIMIT keeps the subqueries from
// being flattened into joins): a hash join would read all of river_job or
// kern_run_event whenever the statistics make them look small.
const orphanJoins = `
LEFT JOIN LATERAL (SELECT id, state, attempted_at FROM river_job
	WHERE id = r.job_id AND r.status = 'pending' LIMIT 1) j ON true
LEFT JOIN LATERAL (SELECT at FROM kern_run_event
	WHERE run_id = r.id AND seq = r.event_seq AND r.status = 'pending' LIMIT 1) e ON true`

// sqlOrphanedRuns locks orphaned runs. It never scans the pending runs: a
// legitimate backlog can be large, and every worker rescues every few
// seconds. The candidates come from small sets instead: the jobs River has
// running (as many as the fleet's concurrency, served by River's fetch
// index), jobs discarded or cancelled in the $2 seconds before staleAfter
// (rare), pending foreground runs (kern_run_foreground_idx: live ones
// only), and the ids the sweep flagged ($3). The jobs are not filtered by
// kind, which would invite a scan of River's index on kind (every kern job
// River keeps): a job of another kind names no run whose job it is, and
// each candidate is checked on its own run row and that run's own job, by
// primary key, under the lock.
const sqlOrphanedRuns = `
WITH candidates AS (
	SELECT args->>'run_id' AS run_id FROM river_job
	WHERE state = 'running' AND attempted_at < now() - make_interval(secs => $1)
	UNION ALL
	SELECT args->>'run_id' FROM river_job
	WHERE state IN ('discarded', 'cancelled')
	  AND finalized_at BETWEEN now() - make_interval(secs => $1 + $2) AND now() - make_interval(secs => $1)
	UNION ALL
	SELECT id FROM kern_run
	WHERE status = 'pending' AND job_id IS NULL AND created_at < now() - make_interval(secs => $1)
	UNION ALL
	SELECT unnest($3::text[])
)
SELECT r.id, r.agent_name, r.attempt, r.job_id IS NULL, r.priority FROM kern_run r` + orphanJoins + `
WHERE r.id = ANY (ARRAY(SELECT run_id FROM candidates)) AND ` + orphanedRun + `
LIMIT 100
FOR UPDATE OF r SKIP LOCKED`

// The sweep is the backstop for orphans no candidate set above names — a
// job row deleted by hand, a job that completed without starting its run,
// one discarded longer ago: each rescue looks at the next page of runs in
// id order after the fleet's shared cursor and flags the orphans among
// them. A page is read through the primary key, the one plan that stays
// right whatever the statistics say, so the work per rescue is one page
// however long the backlog; the fleet covers the table in turn. SKIP
// LOCKED: a rescuer that finds another one sweeping skips its turn.
const sqlSweepCursor = `SELECT run_id FROM kern_rescue_sweep FOR UPDATE SKIP LOCKED`

// sqlSweepPage reads the page of runs after the cursor ($2), $3 of them,
// each with whether it is orphaned ($1 is staleAfter in seconds); only the
// pending ones look up their job and last event.
const sqlSweepPage = `
SELECT r.id, COALESCE(` + orphanedRun + `, false)
FROM (SELECT id, status, job_id, created_at, heartbeat_at, event_seq FROM kern_run
	WHERE id > $2 ORDER BY id LIMIT $3) r` + orphanJoins + `
ORDER BY r.id`

const sqlSweepAdvance = `UPDATE kern_rescue_sweep SET run_id = $1`

// sqlRequeueRun gives a rescued run a new job ($3) and puts it back to
// pending for another worker; the dead attempt is fenced out by the attempt
// the next start takes.
const sqlRequeueRun = `
WITH requeued AS (
	UPDATE kern_run SET status = 'pending', content = '', error = $2, heartbeat_at = NULL,
		job_id = $3, event_seq = event_seq + 1
	WHERE id = $1 AND status IN ('running', 'pending')
	RETURNING id, event_seq, attempt
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.retrying', jsonb_build_object('attempt', attempt, 'error', $2::text, 'retry_in_ms', 0)
FROM requeued`

// sqlFailRun ends a rescued run that has no attempts left.
const sqlFailRun = `
WITH failed AS (
	UPDATE kern_run SET status = 'error', error = $2, finished_at = now(), duration_us = ` + runDurationUs + `,
		event_seq = event_seq + 1
	WHERE id = $1 AND status = 'running'
	RETURNING id, event_seq
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.error', jsonb_build_object('error', $2::text) FROM failed`

// sqlLegacyAgents and sqlMoveLegacyJobs move unfinished run jobs off the
// queue every run used before runs were routed per agent ($1).
const sqlLegacyAgents = `
SELECT DISTINCT args->>'agent' FROM river_job
WHERE queue = $1 AND kind = 'kern_run' AND state IN ('available', 'scheduled', 'retryable', 'pending', 'running')`

const sqlMoveLegacyJobs = `
UPDATE river_job SET queue = $3
WHERE queue = $1 AND kind = 'kern_run' AND args->>'agent' = $2
  AND state IN ('available', 'scheduled', 'retryable', 'pending', 'running')`

// sqlRegisterWorker records or renews a worker and the agents it serves,
// and forgets workers that expired long ago.
const sqlRegisterWorker = `
WITH gone AS (
	DELETE FROM kern_worker WHERE expires_at < now() - interval '1 hour'
)
INSERT INTO kern_worker (id, agents, host, pid, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
ON CONFLICT (id) DO UPDATE SET agents = EXCLUDED.agents, expires_at = EXCLUDED.expires_at`

const sqlUnregisterWorker = `DELETE FROM kern_worker WHERE id = $1`

// Cancel is two steps in this order. The requests are committed first
// (sqlInsertTreeCancel: the run's and its live descendants', in one
// transaction), so every worker that starts one of them afterwards sees
// its request; then each run is moved to cancelled if it is not terminal
// yet (sqlCancelRun, one transaction per run).

// sqlCancelRun cancels the run if it is not terminal yet, with its
// run.cancelled event; a waiting run, which no worker holds, ends cancelled
// here at once. Both this and sqlFinishRun lock the row and re-check
// the status under the lock, so exactly one of them wins and the loser
// changes nothing.
const sqlCancelRun = `
WITH cancelled AS (
	UPDATE kern_run SET status = 'cancelled', finished_at = now(), duration_us = ` + runDurationUs + `, event_seq = event_seq + 1
	WHERE id = $1 AND status IN ('pending', 'running', 'waiting')
	RETURNING id, event_seq
)
INSERT INTO kern_run_event (run_id, seq, type)
SELECT id, event_seq, 'run.cancelled' FROM cancelled`

// sqlRunStatus reads the status of a run that sqlCancelRun did not change.
const sqlRunStatus = `SELECT status FROM kern_run WHERE id = $1`

// sqlDeleteCancel withdraws a request that came too late: the run had
// already finished, and CancelRun promises to change nothing then.
const sqlDeleteCancel = `DELETE FROM kern_run_cancel WHERE run_id = $1`

// sqlRecheck is the listener's safety net for lost notifications: which of
// the watched runs are terminal or waiting ($1), which have a cancel request ($2), and
// which have events past the position a follower has read ($3, $4).
const sqlRecheck = `
SELECT 'done', id FROM kern_run
WHERE id = ANY($1) AND status IN ('completed', 'error', 'cancelled', 'waiting')
UNION ALL
SELECT 'cancel', c.run_id FROM kern_run_cancel c WHERE c.run_id = ANY($2)
UNION ALL
SELECT 'event', r.id FROM kern_run r JOIN unnest($3::text[], $4::bigint[]) AS w(id, seq) ON r.id = w.id
WHERE r.event_seq > w.seq`

// sqlEvents reads a page of a run's events after a seq.
const sqlEvents = `
SELECT run_id, seq, type, data, at FROM kern_run_event
WHERE run_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3`

// sqlEventPosition tells a follower that found no new events whether more
// can come: the run's status and its last event's seq.
const sqlEventPosition = `SELECT status, event_seq FROM kern_run WHERE id = $1`

// listRunsFilter is the WHERE of ListRuns' statements but for the agent:
// the statuses ($1, NULL for any), the session ($2) and name ($3), empty
// for any, and the keyset (created_at, id) of the last row of the previous
// page ($4, $5; NULL and empty for the first page). The keyset is always a
// condition, with infinity for the first page, so that even a generic plan
// of the prepared statement starts its index scan at the cursor instead of
// reading from the newest run and filtering.
const listRunsFilter = `($1::text[] IS NULL OR status = ANY($1))
  AND ($2 = '' OR session_id = $2)
  AND ($3 = '' OR name = $3)
  AND (created_at, id) < (COALESCE($4::timestamptz, 'infinity'), $5::text)`

// sqlListRuns pages runs newest first, $6 at a time. kern_run_created_idx
// serves it, or kern_run_session_idx for one session.
var sqlListRuns = listRunsQuery("")

// sqlListRunsOfAgent is sqlListRuns for one agent ($7), served by
// kern_run_agent_idx. It is a statement of its own because a condition
// that holds for every agent when $7 is empty cannot use the index in a
// generic plan, and then an agent with no runs costs a scan of the table.
var sqlListRunsOfAgent = listRunsQuery("agent_name = $7 AND ")

// sqlListRunsOfTenant ($7) and sqlListRunsOfTenantAgent (agent $7,
// tenant $8) are the two for one tenant, statements of their own for the
// same reason: kern_run_tenant_idx serves the first, kern_run_agent_idx
// the second. The first also says the tenant is not the empty one (which
// ListRuns never asks for here), so that a generic plan, not knowing $7,
// can still prove the partial index's predicate and use it.
var (
	sqlListRunsOfTenant      = listRunsQuery("tenant_id = $7 AND tenant_id <> '' AND ")
	sqlListRunsOfTenantAgent = listRunsQuery("tenant_id = $8 AND agent_name = $7 AND ")
)

func listRunsQuery(where string) string {
	return `
SELECT ` + runReadColumns + ` FROM kern_run
WHERE ` + where + listRunsFilter + `
ORDER BY created_at DESC, id DESC
LIMIT $6`
}

// sqlDeleteRuns deletes one batch ($4) of finished runs ($1: terminal
// statuses only) that finished at least $2 seconds ago, oldest first from
// $3 on (the last batch's newest finished_at), with their events, cancel
// requests and transcript steps. kern_run_finished_idx serves it; the rest
// is looked up by primary key — an array of ids, not a join, so that no
// plan can read a whole table to find a batch's rows. SKIP LOCKED:
// concurrent deleters take different batches instead of queueing behind
// each other. It returns how
// many runs it deleted and the newest finished_at among them.
const sqlDeleteRuns = `
WITH doomed AS (
	SELECT id FROM kern_run
	WHERE finished_at >= $3 AND finished_at <= now() - make_interval(secs => $2) AND status = ANY($1)
	ORDER BY finished_at
	LIMIT $4
	FOR UPDATE SKIP LOCKED
), deleted AS (
	DELETE FROM kern_run WHERE id = ANY (ARRAY(SELECT id FROM doomed))
	RETURNING id, finished_at
), events AS (
	DELETE FROM kern_run_event WHERE run_id = ANY (ARRAY(SELECT id FROM deleted))
), requests AS (
	DELETE FROM kern_run_cancel WHERE run_id = ANY (ARRAY(SELECT id FROM deleted))
), steps AS (
	DELETE FROM kern_run_step WHERE run_id = ANY (ARRAY(SELECT id FROM deleted))
)
SELECT count(*), max(finished_at) FROM deleted`

// sqlDeleteStrayCancels deletes one batch ($3) of cancel requests made at
// least $1 seconds ago, oldest first from $2 on, whose run does not exist:
// a cancel-before-start for a run that never came. kern_run_cancel_requested_idx
// serves it. It returns how many it deleted and the newest requested_at.
const sqlDeleteStrayCancels = `
WITH doomed AS (
	SELECT c.run_id FROM kern_run_cancel c
	WHERE c.requested_at >= $2 AND c.requested_at <= now() - make_interval(secs => $1)
	  AND NOT EXISTS (SELECT 1 FROM kern_run r WHERE r.id = c.run_id)
	ORDER BY c.requested_at
	LIMIT $3
	FOR UPDATE OF c SKIP LOCKED
), deleted AS (
	DELETE FROM kern_run_cancel WHERE run_id = ANY (ARRAY(SELECT run_id FROM doomed))
	RETURNING requested_at
)
SELECT count(*), max(requested_at) FROM deleted`

// Listener registrations (db/listener_registry.go). Registering also clears
// the rows that processes which died left behind; renewing is the same
// upsert, since a row that expired while its process stalled may be gone.
const (
	sqlRegisterListener = `WITH gone AS (DELETE FROM kern_event_listener WHERE expires_at < now())
INSERT INTO kern_event_listener (id, expires_at) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at`
	sqlUnregisterListener = `DELETE FROM kern_event_listener WHERE id = $1`
)

// sqlRunKeys finds the keys of the runs of id $1 (engine.RunKey) for an
// operator's read by id: the operator's own run first, then at most two
// tenants' (two are enough to know the id is ambiguous).
// kern_run_tenant_run_id_idx serves the second part.
const sqlRunKeys = `
(SELECT id FROM kern_run WHERE id = $1)
UNION ALL
(SELECT id FROM kern_run WHERE tenant_id <> '' AND substr(id, length(tenant_id) + 2) = $1 LIMIT 2)`
