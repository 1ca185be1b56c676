-- Runs form trees: a sub-agent's run (a child) names the run that started
-- it (its parent). parent_run_id holds the parent's run KEY
-- (internal/engine.RunKey), not its id: a child is always in its parent's
-- tenant, so the key alone keeps a tree inside one tenant by construction,
-- and a tenant's child can never name another tenant's run as its parent.
-- It is not a foreign key: a finished parent is deleted by retention like
-- any run, and its children outlive it; a key names at most one run at a
-- time, so a dangling parent is only ever "gone", never another tenant's.
--
-- depth is 0 for a top-level run and the parent's depth + 1 for a child,
-- fixed at submit: db refuses a child deeper than db.MaxRunDepth, so a
-- model that keeps calling itself as a tool ends with an error instead of
-- an unbounded tree. It also bounds every walk of a tree (cancel).
ALTER TABLE kern_run ADD COLUMN parent_run_id text;
ALTER TABLE kern_run ADD COLUMN depth smallint NOT NULL DEFAULT 0;

-- The children of a run: the cancel that reaches a whole tree walks this
-- index one level at a time (its first column), and listing them
-- (ListParams.ParentRunID) pages it in list order, as kern_run_agent_idx
-- does for an agent, so a run with many children costs a page per page.
-- Partial: most runs are top-level and cost it nothing.
CREATE INDEX kern_run_parent_idx ON kern_run (parent_run_id, created_at DESC, id DESC) WHERE parent_run_id IS NOT NULL;

---- create above / drop below ----
DROP INDEX kern_run_parent_idx;
ALTER TABLE kern_run DROP COLUMN depth;
ALTER TABLE kern_run DROP COLUMN parent_run_id;
