-- Runs that wait for an answer: a model turn asked for a call of a tool that
-- NeedsApproval or is External, and the run is paused, holding no worker,
-- until every open call is answered (db.DB.ApproveToolCall, RejectToolCall,
-- SubmitToolResult). See db's package doc, "Runs that wait for answers".
--
--   waiting_calls   the open calls while waiting: [{"id","name","arguments","seq"}],
--                   seq being the transcript seq the turn reserved for the
--                   call's result; '[]' otherwise.
--   wait_timeout_ms how long the run may wait for answers each time it
--                   waits (WithWaitTimeout); 0 means 24h.
--   waiting_until   when the current wait ends the run as error.
-- NOT VALID, then VALIDATE: the check of the existing rows does not hold
-- the table's exclusive lock.
ALTER TABLE kern_run DROP CONSTRAINT kern_run_status_check;
ALTER TABLE kern_run ADD CONSTRAINT kern_run_status_check
    CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'error', 'cancelled')) NOT VALID;
ALTER TABLE kern_run VALIDATE CONSTRAINT kern_run_status_check;
ALTER TABLE kern_run
    ADD COLUMN waiting_calls   jsonb       NOT NULL DEFAULT '[]',
    ADD COLUMN wait_timeout_ms bigint      NOT NULL DEFAULT 0,
    ADD COLUMN waiting_until   timestamptz;

-- The workers' rescue ends runs that waited too long; it reads this index.
CREATE INDEX kern_run_waiting_idx ON kern_run (waiting_until) WHERE status = 'waiting';

-- The answers a run got: the first answer to a call stands (the primary key,
-- and the run row's lock, which every answer takes first). 'approved' calls
-- are made by the worker that continues the run; 'rejected' and 'result'
-- answers are also stored as the call's tool step, so the model reads them.
CREATE TABLE kern_run_answer (
    run_id      text        NOT NULL REFERENCES kern_run (id) ON DELETE CASCADE,
    call_id     text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('approved', 'rejected', 'result')),
    text        text        NOT NULL DEFAULT '',
    answered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, call_id)
);

-- A run that starts waiting wakes WaitRun as a terminal one does: its
-- run.waiting event notifies with the done mark.
CREATE OR REPLACE FUNCTION kern_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM kern_event_listener WHERE expires_at > now()) THEN
        RETURN NULL;
    END IF;
    FOR r IN
        SELECT run_id, bool_or(type IN ('run.completed', 'run.error', 'run.cancelled', 'run.waiting')) AS done
        FROM new_events GROUP BY run_id
    LOOP
        PERFORM pg_notify('kern_event', r.run_id || CASE WHEN r.done THEN E'\x1fdone' ELSE '' END);
    END LOOP;
    RETURN NULL;
END;
$$;

---- create above / drop below ----

CREATE OR REPLACE FUNCTION kern_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM kern_event_listener WHERE expires_at > now()) THEN
        RETURN NULL;
    END IF;
    FOR r IN
        SELECT run_id, bool_or(type IN ('run.completed', 'run.error', 'run.cancelled')) AS done
        FROM new_events GROUP BY run_id
    LOOP
        PERFORM pg_notify('kern_event', r.run_id || CASE WHEN r.done THEN E'\x1fdone' ELSE '' END);
    END LOOP;
    RETURN NULL;
END;
$$;

DROP TABLE kern_run_answer;
DROP INDEX kern_run_waiting_idx;
UPDATE kern_run SET status = 'error', error = 'waiting run ended by a schema downgrade', finished_at = now()
WHERE status = 'waiting';
ALTER TABLE kern_run
    DROP COLUMN waiting_until,
    DROP COLUMN wait_timeout_ms,
    DROP COLUMN waiting_calls;
ALTER TABLE kern_run DROP CONSTRAINT kern_run_status_check;
ALTER TABLE kern_run ADD CONSTRAINT kern_run_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'error', 'cancelled'));
