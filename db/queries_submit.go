package db

// sqlSubmitRuns inserts a batch of submits in one statement, so one round
// trip and one commit: the River jobs of the background runs (river_job,
// as River's own JobInsertFastMany writes them: kind, args, queue,
// priority, max_attempts, metadata, scheduled_at and its state; no unique
// options, no tags), then every run with its job's id and priority (kept
// for the jobs it gets later). One statement is
// one transaction: still no row without its job nor job without its row.
// A duplicate id or idempotency key fails the whole statement (the batcher
// then tries each submit alone). A child names its parent's key and its
// depth ($19, $20: NULL and 0 for a top-level run), found by parentOf
// before the submit is batched. Times are Postgres's, as River's fetch
// compares them with now().
//
// submitJobColumnsMatchRiver (submit_test.go) holds the job rows to what
// River's InsertTx writes, so a River upgrade that changes its job rows
// fails there rather than in production.
const sqlSubmitRuns = `
WITH u AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]::json[],
		$7::bigint[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::timestamptz[], $13::text[],
		$14::boolean[], $15::text[], $16::smallint[], $17::text[], $19::text[], $20::smallint[])
	AS u(id, session_id, agent_name, name, input, metadata, timeout_ms, idempotency_key, wait_timeout_ms,
		concurrency_key, webhook_url, start_at, tenant_id,
		enqueue, queue, priority, job_metadata, parent_run_id, depth)
), job AS (
	INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
	SELECT jsonb_build_object('run_id', u.id, 'agent', u.agent_name), 'kern_run', $18::smallint,
		coalesce(u.job_metadata::jsonb, '{}'::jsonb), u.priority, u.queue, coalesce(u.start_at, now()),
		(CASE WHEN u.start_at > now() THEN 'scheduled' ELSE 'available' END)::river_job_state, '{}'
	FROM u WHERE u.enqueue
	RETURNING id, args->>'run_id' AS run_id
)
INSERT INTO kern_run (id, session_id, agent_name, name, input, metadata, timeout_ms, job_id, idempotency_key, wait_timeout_ms,
	concurrency_key, webhook_url, heartbeat_at, tenant_id, priority, parent_run_id, depth)
SELECT u.id, u.session_id, u.agent_name, u.name, u.input, u.metadata, u.timeout_ms, job.id, u.idempotency_key, u.wait_timeout_ms,
	u.concurrency_key, u.webhook_url, CASE WHEN job.id IS NULL THEN now() ELSE u.start_at END, u.tenant_id, u.priority,
	u.parent_run_id, u.depth
FROM u LEFT JOIN job ON job.run_id = u.id
RETURNING ` + runColumns
