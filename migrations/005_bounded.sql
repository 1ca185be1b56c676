-- Bounded maintenance: every statement a worker repeats on a timer (the
-- rescue every HeartbeatInterval, retention every minute) reads a bounded
-- number of rows however many runs the table holds or how long the backlog.

-- Foreground runs (no job) that are pending: their caller is between submit
-- and start, or waits out a retry delay. Only live foreground runs match, so
-- the index stays tiny and background runs never enter it. The rescuer finds
-- the ones whose caller died here; heartbeat_at, which decides that, is
-- deliberately not indexed (heartbeats must stay HOT updates).
CREATE INDEX kern_run_foreground_idx ON kern_run (created_at) WHERE status = 'pending' AND job_id IS NULL;

-- DeleteRuns takes the oldest finished runs first, a batch at a time. Live
-- runs have no finished_at and stay out of it.
CREATE INDEX kern_run_finished_idx ON kern_run (finished_at) WHERE finished_at IS NOT NULL;

-- ListRuns for one agent, newest first: without it a filter on an agent that
-- has few runs (or none) reads the whole table.
CREATE INDEX kern_run_agent_idx ON kern_run (agent_name, created_at DESC, id DESC);

-- DeleteRuns removes cancel requests whose run never came, oldest first.
CREATE INDEX kern_run_cancel_requested_idx ON kern_run_cancel (requested_at);

-- Where the rescuer's slow sweep of the runs (the backstop for orphans no
-- job names, such as a run whose job row was deleted by hand) has got to:
-- the id of the last run it looked at. One row, shared by every worker, so
-- the fleet sweeps together and a restart does not start over.
CREATE TABLE kern_rescue_sweep (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    run_id   text    NOT NULL DEFAULT ''
);
INSERT INTO kern_rescue_sweep DEFAULT VALUES;

---- create above / drop below ----

DROP TABLE kern_rescue_sweep;
DROP INDEX kern_run_cancel_requested_idx;
DROP INDEX kern_run_agent_idx;
DROP INDEX kern_run_finished_idx;
DROP INDEX kern_run_foreground_idx;
