package db

// The statements of the fleet's rate limits (ratelimit.go,
// ratelimit_lease.go); the functions they call are in
// migrations/014_rate_limits.sql and 015_rate_leases.sql.

// sqlSetRateLimit puts a model's budgets, keeping its window, totals, grants
// and pause: changing a budget does not forget what was spent.
const sqlSetRateLimit = `
INSERT INTO kern_rate_limit (model, requests_per_minute, tokens_per_minute)
VALUES ($1, $2, $3)
ON CONFLICT (model) DO UPDATE SET requests_per_minute = EXCLUDED.requests_per_minute,
	tokens_per_minute = EXCLUDED.tokens_per_minute, updated_at = now()`

// sqlDeleteRateLimit removes a model's limit, with its grants and waiters
// (both zero). Waiters that ask again find no row and go.
const sqlDeleteRateLimit = `
WITH l AS (DELETE FROM kern_rate_limit WHERE model = $1),
	g AS (DELETE FROM kern_rate_grant WHERE model = $1)
DELETE FROM kern_rate_waiter WHERE model = $1`

const sqlListRateLimits = `
SELECT model, requests_per_minute, tokens_per_minute FROM kern_rate_limit
WHERE requests_per_minute > 0 OR tokens_per_minute > 0 ORDER BY model`

// sqlLimitedModels is the process's cache of the models that have a limit.
const sqlLimitedModels = `
SELECT model, tokens_per_minute > 0 FROM kern_rate_limit
WHERE requests_per_minute > 0 OR tokens_per_minute > 0`

// sqlReserve is the exact, per-call path: a batch of reservations, with
// the process's pending deltas of the batch's models ($6..$9).
const sqlReserve = `SELECT o_idx, o_granted, COALESCE(o_grant, 0), o_wait_ms, o_reason, o_rpm, o_tpm
FROM kern_rate_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9)`

// sqlLease asks model $1 for a lease of $2 requests and $3 tokens (at least
// $4), with the process's pending deltas of that model ($5..$8).
const sqlLease = `SELECT o_granted, COALESCE(o_grant, 0), o_requests, o_tokens, o_life_ms, o_wait_ms, o_reason, o_rpm, o_tpm
FROM kern_rate_lease($1, $2, $3, $4, $5, $6, $7, $8)`

// sqlSettle writes pending deltas that no reservation took along.
const sqlSettle = `SELECT kern_rate_settle($1, $2, $3, $4)`

const sqlReconcile = `SELECT kern_rate_reconcile($1, $2, $3)`

// sqlPause pauses a limited model until $2 ms from now (Postgres's clock),
// unless it is paused longer already.
const sqlPause = `
UPDATE kern_rate_limit SET paused_until = GREATEST(COALESCE(paused_until, '-infinity'),
	clock_timestamp() + $2::bigint * interval '1 millisecond')
WHERE model = $1`

// sqlThrottled says on the run why it waits: its error column (runs' reads
// show it as Output.Error) and a run.throttled event at seq $3, fenced like
// a content write (applies only right after event seq $3-1).
const sqlThrottled = `
WITH t AS (
	UPDATE kern_run SET error = $4, event_seq = $3
	WHERE id = $1 AND execution = $2 AND status = 'running' AND event_seq = $3 - 1
	RETURNING id, event_seq
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, event_seq, 'run.throttled', jsonb_build_object('model', $5::text, 'wait_ms', $6::bigint) FROM t
)
SELECT count(*) FROM t`

// sqlThrottledSeq reads the run's event seq after a throttled write that did
// not apply: the same seq means it had applied (a resend).
const sqlThrottledSeq = `SELECT event_seq FROM kern_run WHERE id = $1 AND execution = $2 AND status = 'running'`

// sqlWithdraw takes a run out of a model's waiters and clears the error that
// said it waited.
const sqlWithdraw = `
WITH w AS (DELETE FROM kern_rate_waiter WHERE model = $3 AND run_id = $1)
UPDATE kern_run SET error = '' WHERE id = $1 AND execution = $2 AND status = 'running'`

const sqlSetRateWindow = `UPDATE kern_rate_limit SET window_ms = $2 WHERE model = $1`
