-- A worker's liveness is a session advisory lock, not its backend's
-- presence in pg_stat_activity. Behind a session pooler (PgBouncer
-- pool_mode=session) a dead worker's backend stays: the pooler returns it
-- to its pool after its reset query (DISCARD ALL), which releases the
-- worker's advisory locks. A lock is released with the session that holds
-- it in every other case too, and pg_locks shows every role's locks, where
-- pg_stat_activity hides other roles' sessions from a role without
-- pg_read_all_stats (managed Postgres).
--
-- Each session takes the next number of kern_worker_session_lock_seq as
-- the lock's second key (the first is derived from the schema, so two kern
-- installs in one database never share a lock) and records it here. A
-- worker of the previous release (NULL here) is judged as before.

CREATE SEQUENCE kern_worker_session_lock_seq AS integer CYCLE;

ALTER TABLE kern_worker ADD COLUMN session_lock integer;

---- create above / drop below ----
ALTER TABLE kern_worker DROP COLUMN session_lock;
DROP SEQUENCE kern_worker_session_lock_seq;
