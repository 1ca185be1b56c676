package db

// The statements of runs that wait for answers to their tool calls
// (migrations/008_approval.sql; the package doc's "Runs that wait for
// answers").

// sqlWaitForAnswers moves a running run to waiting, fenced like every
// write of an execution and applied only right after event $3-1: the open
// calls ($4, with the transcript seqs of their results), the deadline of
// the wait (the run's wait_timeout_ms, or $6 ms when it has none), no job
// and no heartbeat (no worker holds it now), and its run.waiting event
// ($5: the calls as answerers see them).
const sqlWaitForAnswers = `
WITH waiting AS (
	UPDATE kern_run SET
		status        = 'waiting',
		waiting_calls = $4::jsonb,
		waiting_until = now() + CASE WHEN wait_timeout_ms > 0 THEN wait_timeout_ms ELSE $6::bigint END * interval '1 millisecond',
		job_id        = NULL,
		heartbeat_at  = NULL,
		content       = '',
		event_seq     = $3
	WHERE id = $1 AND execution = $2 AND status = 'running' AND event_seq = $3 - 1
	RETURNING id, event_seq
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.waiting', jsonb_build_object('calls', $5::jsonb) FROM waiting
RETURNING run_id`

// sqlWaitApplied reads back whether a wait that did not apply (or whose
// outcome is unknown) is in the run already: the same execution's, with
// its event.
const sqlWaitApplied = `
SELECT EXISTS (SELECT 1 FROM kern_run WHERE id = $1 AND execution = $2 AND status <> 'running' AND event_seq >= $3
	AND EXISTS (SELECT 1 FROM kern_run_event WHERE run_id = $1 AND seq = $3 AND type = 'run.waiting'))`

// sqlLockWaiting locks the run an answer is for and reads what it waits
// on, and what its next job needs (its agent and priority). Every answer
// takes this lock first, so answers to one run are serialised: the second
// answer to a call finds it gone from waiting_calls.
const sqlLockWaiting = `SELECT status, waiting_calls, agent_name, priority FROM kern_run WHERE id = $1 FOR UPDATE`

// sqlPriorAnswer reads the answer a call has already, under the lock
// sqlLockWaiting took: a run waits on an approved call again when the
// worker that resumed it has the call's tool as External.
const sqlPriorAnswer = `SELECT kind FROM kern_run_answer WHERE run_id = $1 AND call_id = $2`

// sqlAnswer records an answer to call $4 of a waiting run $1, under the
// lock sqlLockWaiting took: the calls still open ($2); when none is, the
// run goes back to pending with its new job ($3, NULL while calls remain),
// and the attempt is given back, as a hand-back does (a wait is not a
// failure). The answer row, its event ($9 type, $10 data), and for a
// rejection or a result the call's tool step at the seq its turn reserved
// ($7 > 0, content $8), so the execution that continues the run finds it
// stored. A result or a rejection of a call the run waits on again after
// its approval (see checkAnswerKind) takes the approval's place.
const sqlAnswer = `
WITH answered AS (
	UPDATE kern_run SET
		waiting_calls = $2::jsonb,
		status        = CASE WHEN $3::bigint IS NULL THEN status ELSE 'pending' END,
		job_id        = CASE WHEN $3::bigint IS NULL THEN job_id ELSE $3 END,
		attempt       = CASE WHEN $3::bigint IS NULL THEN attempt ELSE greatest(attempt - 1, 0) END,
		waiting_until = CASE WHEN $3::bigint IS NULL THEN waiting_until END,
		event_seq     = event_seq + 1
	WHERE id = $1 AND status = 'waiting'
	RETURNING id, event_seq
), answer AS (
	INSERT INTO kern_run_answer (run_id, call_id, kind, text)
	SELECT id, $4, $5, $6 FROM answered
	ON CONFLICT (run_id, call_id) DO UPDATE SET kind = excluded.kind, text = excluded.text, answered_at = now()
	WHERE kern_run_answer.kind = 'approved' AND excluded.kind <> 'approved'
), step AS (
	INSERT INTO kern_run_step (run_id, seq, role, content, tool_call_id, tool_name)
	SELECT id, $7, 'tool', $8, $4, $11 FROM answered WHERE $7::int > 0
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, $9, $10::jsonb FROM answered`

// sqlExpiredWaits locks a bounded batch of runs whose wait for answers
// ended, served by kern_run_waiting_idx; SKIP LOCKED lets the fleet's
// rescuers share them (and skips a run an answer is being written to).
const sqlExpiredWaits = `
SELECT id, wait_timeout_ms FROM kern_run
WHERE status = 'waiting' AND waiting_until < now()
ORDER BY waiting_until
LIMIT 100
FOR UPDATE SKIP LOCKED`

// sqlExpireWaits ends waiting runs ($1) as error ($2: why), with their
// run.error events.
const sqlExpireWaits = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::text[]) AS r(req_id, req_error)
), failed AS (
	UPDATE kern_run SET status = 'error', error = req.req_error, finished_at = now(), duration_us = ` + runDurationUs + `,
		event_seq = event_seq + 1
	FROM req
	WHERE id = req.req_id AND status = 'waiting'
	RETURNING id, event_seq, req.req_error
)
INSERT INTO kern_run_event (run_id, seq, type, data)
SELECT id, event_seq, 'run.error', jsonb_build_object('error', req_error) FROM failed
RETURNING run_id`
