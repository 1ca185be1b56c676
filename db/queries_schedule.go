package db

// The statements of recurring schedules (schedule.go); the table is in
// ../migrations/010_schedules.sql.

// scheduleColumns is the column list scanned into scheduleRow, in order.
const scheduleColumns = `name, agent_name, prompt, cron, timezone, session_id, metadata, paused,
	next_run_at, last_run_id, created_at, updated_at, tenant_id`

// sqlLockScheduleName serialises PutSchedule calls of one name of one
// tenant ($2), whether or not the row exists yet (a row lock needs a row).
const sqlLockScheduleName = `SELECT pg_advisory_xact_lock(hashtextextended('kern_schedule/' || $2 || '/' || $1, 0))`

// sqlLockSchedule waits for a firing pass that holds the schedule's row
// (and keeps the next one off it), then reads Postgres's clock: the next due
// time a replace computes is after every due time already fired.
const sqlLockSchedule = `
SELECT clock_timestamp(), EXISTS (SELECT 1 FROM (SELECT 1 FROM kern_schedule WHERE tenant_id = $2 AND name = $1 FOR UPDATE) s)`

// sqlPutSchedule creates or replaces a schedule; a replace keeps
// last_run_id and created_at.
const sqlPutSchedule = `
INSERT INTO kern_schedule (name, agent_name, prompt, cron, timezone, session_id, metadata, paused, next_run_at, tenant_id)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8, $9, $10)
ON CONFLICT (tenant_id, name) DO UPDATE SET
	agent_name  = EXCLUDED.agent_name,
	prompt      = EXCLUDED.prompt,
	cron        = EXCLUDED.cron,
	timezone    = EXCLUDED.timezone,
	session_id  = EXCLUDED.session_id,
	metadata    = EXCLUDED.metadata,
	paused      = EXCLUDED.paused,
	next_run_at = EXCLUDED.next_run_at,
	updated_at  = now()
RETURNING ` + scheduleColumns

// sqlListSchedules lists every tenant's schedules ($1 NULL) or one
// tenant's.
const sqlListSchedules = `SELECT ` + scheduleColumns + ` FROM kern_schedule
WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, name`

const sqlGetSchedule = `SELECT ` + scheduleColumns + ` FROM kern_schedule WHERE tenant_id = $2 AND name = $1`

const sqlDeleteSchedule = `DELETE FROM kern_schedule WHERE tenant_id = $2 AND name = $1`

// sqlNextScheduleDue is how long until the earliest due time of the agents'
// unpaused schedules, in seconds (NULL: none); negative when some are due.
const sqlNextScheduleDue = `
SELECT EXTRACT(EPOCH FROM min(next_run_at) - clock_timestamp())::float8
FROM kern_schedule WHERE agent_name = ANY ($1::text[]) AND NOT paused`

// sqlLockDueSchedules takes the due schedules of the agents, skipping those
// another worker's pass holds. Its WHERE is re-checked against the latest
// row version after a concurrent pass committed, so a due time that pass
// fired (next_run_at moved on) is not taken again. now() is the
// transaction's start: the next due time is computed after it.
const sqlLockDueSchedules = `
SELECT name, agent_name, prompt, cron, timezone, session_id, metadata::text, now(), tenant_id
FROM kern_schedule
WHERE agent_name = ANY ($1::text[]) AND NOT paused AND next_run_at <= now()
ORDER BY next_run_at
LIMIT $2
FOR UPDATE SKIP LOCKED`

// sqlScheduleFired records a pass's firings: each schedule's run (an empty
// run_id when it could not make one) and next due time.
const sqlScheduleFired = `
UPDATE kern_schedule s SET
	last_run_id = CASE WHEN u.run_id <> '' THEN u.run_id ELSE s.last_run_id END,
	next_run_at = u.next_run_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(name, run_id, next_run_at, tenant_id)
WHERE s.tenant_id = u.tenant_id AND s.name = u.name`
