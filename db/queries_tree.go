package db

// The statements of run trees (tree.go): a child names its parent's key
// in parent_run_id and has depth parent's + 1 (migrations/022_run_tree.sql).

// sqlRunDepth reads a parent's depth for its child's submit (parentOf).
const sqlRunDepth = `SELECT depth FROM kern_run WHERE id = $1`

// sqlListRunsOfParent is sqlListRuns for the children of one run (its key
// $7), of agent $8 or any when empty; kern_run_parent_idx serves it. The
// key names the tenant as well, as a child is in its parent's.
var sqlListRunsOfParent = listRunsQuery("parent_run_id = $7 AND ($8 = '' OR agent_name = $8) AND ")

// sqlInsertTreeCancel is the first step of a cancel (see sqlCancelRun):
// it commits the cancel requests of the run $1 and of every live run below
// it, at any depth, in one statement, so one transaction. The walk goes
// down kern_run_parent_idx one level at a time, through finished runs too
// (a finished child's child may still be live), and only to deeper runs:
// depth grows by one per level and is at most MaxRunDepth, so the walk
// ends even if a deleted run's key were reused below its old children.
// Requests are inserted in key order, so two concurrent cancels of
// overlapping trees take the request rows' index locks in one order. The
// request trigger notifies kern_cancel for each new row, as for one run.
//
// $2 false leaves out the run's own request: the second walk of a cancel
// (cancelRun), made after the first committed, which may have withdrawn
// it. It returns whether the run's own request is new (CancelRun
// withdraws it if the run had finished) and the keys of the live runs
// below it, which cancelRun then moves to cancelled one by one.
const sqlInsertTreeCancel = `
WITH RECURSIVE tree (id, depth, status) AS (
	SELECT $1::text, COALESCE((SELECT depth FROM kern_run WHERE id = $1), -1::smallint), NULL::text
	UNION ALL
	SELECT c.id, c.depth, c.status FROM tree t JOIN kern_run c ON c.parent_run_id = t.id
	WHERE c.parent_run_id IS NOT NULL AND c.depth > t.depth
), live AS (
	SELECT id FROM tree WHERE status IN ('pending', 'running', 'waiting')
), req AS (
	INSERT INTO kern_run_cancel (run_id)
	SELECT id FROM (SELECT $1::text AS id WHERE $2::boolean UNION SELECT id FROM live) k ORDER BY id
	ON CONFLICT (run_id) DO NOTHING
	RETURNING run_id
)
SELECT EXISTS (SELECT 1 FROM req WHERE run_id = $1), ARRAY(SELECT id FROM live ORDER BY id)`

// sqlBelowCancelled tells whether a run ($1, just submitted) is below a run
// with a cancel request: its parent, or any run above that. The walk goes
// up one parent at a time, only to shallower runs, so it ends; a parent
// that is gone (deleted by retention) is still looked up by its key.
const sqlBelowCancelled = `
WITH RECURSIVE up (id, parent, depth) AS (
	SELECT id, parent_run_id, depth FROM kern_run WHERE id = $1
	UNION ALL
	SELECT r.id, r.parent_run_id, r.depth FROM up JOIN kern_run r ON r.id = up.parent
	WHERE r.depth < up.depth
)
SELECT EXISTS (SELECT 1 FROM kern_run_cancel c WHERE c.run_id IN (SELECT parent FROM up WHERE parent IS NOT NULL))`
