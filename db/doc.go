// Package db is kern's storage: every SQL statement kern runs, the schema
// migrations (kern's via tern, River's via rivermigrate), and the one
// LISTEN connection per process that wakes waiters.
//
// # The flow of a run through the database
//
//  1. SubmitRun inserts the run row (pending) and, for a background run, its
//     River job, in one transaction: no row without a job, no job without a
//     row. A duplicate id is a unique violation: run.ErrAlreadyExists, and
//     the first run is untouched (there is no ON CONFLICT DO UPDATE).
//  2. A worker claims it with StartRun: one conditional UPDATE that moves
//     pending to running, or straight to cancelled when the cancel table has
//     a request for the id; then the model is never called.
//  3. Streamed content is appended in batches (AppendContent), each write
//     fenced by status = 'running' and the attempt.
//  4. FinishRun writes the terminal status, fenced the same way.
//  5. A trigger notifies kern_run_done on every terminal transition; WaitRun
//     sleeps on it through the shared listener.
//
// # Why a cancel that answered true always ends cancelled
//
// CancelRun first commits a row in kern_run_cancel, then, in a second
// transaction, runs UPDATE … SET status = 'cancelled' WHERE id = $1 AND
// status IN ('pending', 'running'). The guarantees follow from three facts:
//
//   - Statuses only move forward, and every status write is conditional on
//     the current status, so a terminal status is never overwritten.
//   - The cancel UPDATE and the worker's FinishRun UPDATE both take the row
//     lock and re-check their WHERE clause against the latest row version
//     (Postgres re-evaluates it after waiting for a concurrent writer). So
//     exactly one of them applies: if FinishRun applied first, the cancel
//     UPDATE matches nothing, CancelRun sees completed/error, withdraws its
//     request and answers false; if the cancel applied first, FinishRun
//     matches nothing and the run stays cancelled.
//   - When the run does not exist yet (cancel-before-start), the request was
//     committed before CancelRun answered true. The run's row is committed
//     later or concurrently; either the cancel UPDATE sees it (and cancels
//     it), or it was not yet visible, in which case the submit committed
//     after the request did, and so did every StartRun of it, which
//     therefore sees the request and moves the run straight to cancelled.
//     That is why the request must commit in its own transaction before the
//     UPDATE: within one transaction a worker could start the run between
//     the UPDATE and the commit without seeing the request.
//
// The model call is interrupted by a notification on kern_cancel (sent by a
// trigger when the request row is inserted), with a once-a-second re-check
// of the cancel table as the fallback when a notification is lost.
//
// # Attempts
//
// Every write of an executing worker is fenced by the run's attempt (River's
// attempt number of the job), so a worker that lost its run — to a cancel, a
// timeout handled elsewhere or a later attempt — cannot write into it.
package db
