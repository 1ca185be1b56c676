package db

// The statements of completion hooks and webhooks (db/outbox.go); the
// outbox itself is filled by a trigger (migrations/011_completion.sql).

// sqlDrainOutbox claims and deletes outbox rows of the agents $1, up to
// $4 of each kind: webhook rows always, completion rows all when the
// drainer calls OnComplete ($2), else only those older than $3 seconds
// (no worker with an OnComplete took them: they are dropped). Each kind is
// read from its partial index, in no particular order (an ORDER BY over
// several agents would read and sort an agent's whole backlog). SKIP
// LOCKED lets the workers of an agent drain side by side. The caller
// inserts the rows' River jobs in the same transaction.
const sqlDrainOutbox = `
WITH webhooks AS (
	SELECT id FROM kern_run_outbox
	WHERE kind = 'webhook' AND agent_name = ANY ($1::text[])
	LIMIT $4
	FOR UPDATE SKIP LOCKED
), completions AS (
	SELECT id FROM kern_run_outbox
	WHERE kind = 'complete' AND agent_name = ANY ($1::text[])
	  AND created_at < CASE WHEN $2::bool THEN 'infinity' ELSE now() - make_interval(secs => $3) END
	LIMIT $4
	FOR UPDATE SKIP LOCKED
)
DELETE FROM kern_run_outbox
WHERE id = ANY (ARRAY(SELECT id FROM webhooks UNION ALL SELECT id FROM completions))
RETURNING run_id, agent_name, kind`

// sqlWebhookTarget reads what a delivery sends to: the run's webhook URL
// (NULL: none, or the run is gone).
const sqlWebhookTarget = `SELECT webhook_url FROM kern_run WHERE id = $1`

// sqlRecordWebhook writes a delivery attempt's outcome on the run. It sets
// no status column, so the outbox trigger does not look at it.
const sqlRecordWebhook = `
UPDATE kern_run SET webhook_status = $2, webhook_attempts = $3, webhook_last_error = $4
WHERE id = $1 AND webhook_url IS NOT NULL`

// runWebhookColumn is the delivery as GetRun and ListRuns read it: NULL for
// a run without a webhook, else an object with run.WebhookDelivery's field
// names (appended to runColumns).
const runWebhookColumn = `CASE WHEN webhook_url IS NOT NULL THEN jsonb_build_object(
		'URL', webhook_url, 'Status', COALESCE(webhook_status, 'pending'),
		'Attempts', COALESCE(webhook_attempts, 0), 'LastError', COALESCE(webhook_last_error, '')) END AS webhook`
