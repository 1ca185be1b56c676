package db

// The statements of workers' liveness (liveness.go; the package doc,
// "Crash recovery").

// sessionLockClass is the first key of the workers' liveness locks
// (pg_advisory_lock(int, int)): derived from kern's schema, so two kern
// installs in one database never share a lock; the second key is the
// session's number from kern_worker_session_lock_seq
// (migrations/021_session_locks.sql). Positive, so it reads the same as
// pg_locks' classid (an oid).
const sessionLockClass = `(hashtext('kern.worker_session.' || current_schema()) & 2147483647)`

// sessionLocks are the liveness locks held by any backend of this
// database (pg_locks shows every role's locks); a condition on l.objid
// and l.pid follows.
const sessionLocks = `SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = ` + sessionLockClass + `::oid`

// deadWorkers are the workers whose recorded session has ended, on the
// server instance it was recorded on. A worker's session holds a session
// advisory lock (OpenSession) for as long as it lives; Postgres releases
// it when the session ends, and so does a session pooler's reset query
// (DISCARD ALL) when the worker's client connection to the pooler ends —
// while the pooled backend itself lives on. The lock is therefore what
// counts, not the backend. A session recorded before this instance
// started — Postgres restarted, or another server took over — says
// nothing: every session ended then, dead worker or alive, so those
// workers count as alive until they record their new session (an alive
// one does within a heartbeat), and the heartbeat decides for the rest. A
// worker that never recorded a session (NULLs) is judged by its heartbeat
// alone.
//
// A worker of the previous release records no lock (session_lock NULL):
// it is judged by its backend's presence in pg_stat_activity, as that
// release did. A role that may not see another role's sessions reads
// their backend_start as NULL: then the pid alone says the session is
// there (a pid reused since would keep a dead worker's runs for the
// heartbeat: never the other way round).
const deadWorkers = `SELECT w.id FROM kern_worker w
	WHERE w.session_server_start = pg_postmaster_start_time()
	  AND CASE WHEN w.session_lock IS NOT NULL
		THEN NOT EXISTS (` + sessionLocks + ` AND l.objid = w.session_lock::oid)
		ELSE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.session_pid
			AND (a.backend_start = w.session_start OR a.backend_start IS NULL)) END`

// sqlTakeSessionLock takes the next free liveness lock on the session
// running it and returns its number (no row: the number's lock was held —
// only after the sequence cycled — and the caller takes the next).
const sqlTakeSessionLock = `SELECT n FROM (SELECT nextval('kern_worker_session_lock_seq')::integer AS n) s
	WHERE pg_try_advisory_lock(` + sessionLockClass + `, n)`

// sqlRecordSession records the session running it, holding liveness lock
// $2, as worker $1's. It records nothing when this backend does not hold
// the lock: the statement ran on another backend than the one that took
// it — a transaction pooler's — and the connection is no session to judge
// the worker by.
const sqlRecordSession = `UPDATE kern_worker SET session_pid = pg_backend_pid(),
	session_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
	session_server_start = pg_postmaster_start_time(), session_lock = $2
WHERE id = $1 AND EXISTS (` + sessionLocks + ` AND l.objid = $2::integer::oid AND l.pid = pg_backend_pid())`

// sqlHoldsSessionLock tells whether the backend running it holds liveness
// lock $1: a worker's check that its connection is still the session it
// recorded.
const sqlHoldsSessionLock = `SELECT EXISTS (` + sessionLocks + ` AND l.objid = $1::integer::oid AND l.pid = pg_backend_pid())`

// sqlWorkerRegistered tells whether worker $1 is registered.
const sqlWorkerRegistered = `SELECT EXISTS (SELECT 1 FROM kern_worker WHERE id = $1)`

// sqlDeadSessionRuns tells whether a running run's worker is dead by its
// session (kern_run_worker_idx), or a running completion or webhook job's
// (deadHookJobs): the probe a worker makes often.
const sqlDeadSessionRuns = `SELECT EXISTS (SELECT 1 FROM kern_run
	WHERE status = 'running' AND worker_id = ANY(ARRAY(` + deadWorkers + `)))
	OR EXISTS (SELECT 1 FROM river_job j WHERE ` + deadHookJobs + `)`
