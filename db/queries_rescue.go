package db

// Completion and webhook jobs of dead workers (see the package doc, "Crash
// recovery"). A River job records the clients that fetched it in
// attempted_by, the last one being the one that holds a running job; a
// worker's River client has the worker's id (agent.NewWorker), so the job's
// holder is a kern_worker whose session deadWorkers can judge.

// deadHookJobs is the condition on river_job j that it is a completion or
// webhook job running on a worker whose session ended. River's index of
// job states serves it: running jobs are as many as the fleet runs at once.
const deadHookJobs = `j.state = 'running' AND j.kind IN ('kern_complete', 'kern_webhook')
	AND j.attempted_by[array_upper(j.attempted_by, 1)] = ANY(ARRAY(` + deadWorkers + `))`

// sqlRescueHookJobs makes the completion and webhook jobs of dead workers
// available again at once, as River's stuck-job rescue would after
// RescueStuckJobsAfter (an hour): the attempt is recorded in the job's
// errors, and a job out of attempts is discarded. The workers of the jobs'
// queues are told at once (River's insert notification, delivered at the
// rescue's commit). It returns how many jobs it made available.
//
// FOR UPDATE SKIP LOCKED: rescuers running at once take different jobs, and
// a job that River is finishing at this moment is not touched (its holder
// was not dead, then, or its completer finished it first).
const sqlRescueHookJobs = `
WITH dead AS (
	SELECT j.id FROM river_job j WHERE ` + deadHookJobs + `
	FOR UPDATE SKIP LOCKED
), rescued AS (
	UPDATE river_job SET
		state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END::river_job_state,
		finalized_at = CASE WHEN attempt >= max_attempts THEN now() END,
		scheduled_at = now(),
		errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt,
			'error', 'kern: the worker holding the job died (its Postgres session ended)', 'trace', ''))
	WHERE id IN (SELECT id FROM dead)
	RETURNING queue, state
), notified AS (
	SELECT pg_notify(current_schema() || '.river_insert', json_build_object('queue', queue)::text)
	FROM (SELECT DISTINCT queue FROM rescued WHERE state = 'available') q
)
SELECT (SELECT count(*) FROM rescued WHERE state = 'available'), (SELECT count(*) FROM notified)`
