-- A fencing token that only ever grows. attempt counts the executions that
-- used up an attempt (a graceful hand-back gives its attempt back), so it
-- can repeat; execution counts every start and never goes back, so a late
-- write of a released or rescued execution can never match a newer one.
ALTER TABLE kern_run ADD COLUMN execution integer NOT NULL DEFAULT 0;
-- Live runs keep fencing where attempt left off.
UPDATE kern_run SET execution = attempt WHERE status IN ('pending', 'running') AND attempt > 0;

-- Workers say which agents they serve, so a run that no live worker can
-- execute is visibly waiting for one (run.Output.Error) instead of silently
-- pending. A row expires unless its worker renews it.
CREATE TABLE kern_worker (
    id          text        PRIMARY KEY,
    agents      text[]      NOT NULL,
    host        text        NOT NULL DEFAULT '',
    pid         integer     NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

---- create above / drop below ----

DROP TABLE kern_worker;
ALTER TABLE kern_run DROP COLUMN execution;
