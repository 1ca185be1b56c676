-- Crash recovery in about a second: a worker's liveness is its Postgres
-- session. Each worker keeps one connection of its own open for as long as
-- it runs and records that session here (its backend pid and start time,
-- and the start time of the server instance it is on). A running run
-- records the worker that claimed it. When a worker process dies, the
-- kernel closes its sockets, Postgres ends its session, and any other
-- worker sees that the recorded session is gone from pg_stat_activity: it
-- rescues the run at once instead of waiting for the heartbeat to go
-- stale (RescueAfter). See db's package doc, "Crash recovery".

ALTER TABLE kern_worker
    ADD COLUMN session_pid          integer,
    ADD COLUMN session_start        timestamptz,
    ADD COLUMN session_server_start timestamptz;

ALTER TABLE kern_run ADD COLUMN worker_id text;

-- The runs of a worker whose session ended: running runs only, as many as
-- the fleet runs at once.
CREATE INDEX kern_run_worker_idx ON kern_run (worker_id) WHERE status = 'running';

---- create above / drop below ----
DROP INDEX kern_run_worker_idx;
ALTER TABLE kern_run DROP COLUMN worker_id;
ALTER TABLE kern_worker
    DROP COLUMN session_pid,
    DROP COLUMN session_start,
    DROP COLUMN session_server_start;
