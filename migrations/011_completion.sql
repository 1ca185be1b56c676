-- Completion hooks and webhooks: a transactional outbox filled by a trigger.
--
-- Every terminal transition of a run — a worker's finish, a cancel (from any
-- process, also before the run started), a rescue that gives up, a wait that
-- expired — is an UPDATE of kern_run.status. Rather than touch each of those
-- statements, a row trigger on status changes inserts the run's completion
-- into kern_run_outbox in the same transaction: the row commits with the
-- terminal status or not at all, so no completion is ever lost or invented.
-- Workers serving the agent drain the outbox into River jobs (kern_complete
-- for WorkerConfig.OnComplete, kern_webhook for WithWebhook), deleting the
-- rows in the transaction that inserts the jobs. See db's package doc,
-- "Completion hooks and webhooks".
--
-- A row trigger with a WHEN clause, not a statement trigger with transition
-- tables: a trigger with transition tables cannot have a column list, so it
-- would fire on every UPDATE of kern_run — each content flush and heartbeat —
-- and materialise the old and new version of every row it updated, content
-- included. "UPDATE OF status" is not even looked at by the statements that
-- do not set status (content, heartbeats, webhook state), and the WHEN
-- clause is evaluated without calling the function, so only a run that just
-- became terminal pays: one INSERT (two with a webhook).

-- The submit side (WithWebhook) adds this column in 009; IF NOT EXISTS lets
-- either migration come first.
ALTER TABLE kern_run ADD COLUMN IF NOT EXISTS webhook_url text;

-- The webhook's delivery, written by the kern_webhook job. NULL (no cost in
-- a row) until its first attempt; a run with a webhook_url and a NULL
-- status reads as "pending".
ALTER TABLE kern_run
    ADD COLUMN webhook_status     text CHECK (webhook_status IN ('pending', 'delivered', 'failed')),
    ADD COLUMN webhook_attempts   integer,
    ADD COLUMN webhook_last_error text;

CREATE TABLE kern_run_outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text        NOT NULL,
    agent_name text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('complete', 'webhook')),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- What drainers read: an agent's completions (all of them, for a worker
-- with an OnComplete; those older than a minute, to drop, for one without)
-- and its webhooks, each from an index of its own, so that neither kind's
-- backlog is ever scanned to find the other.
CREATE INDEX kern_run_outbox_complete_idx ON kern_run_outbox (agent_name, created_at) WHERE kind = 'complete';
CREATE INDEX kern_run_outbox_webhook_idx ON kern_run_outbox (agent_name) WHERE kind = 'webhook';

CREATE FUNCTION kern_run_outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kern_run_outbox (run_id, agent_name, kind) VALUES (NEW.id, NEW.agent_name, 'complete');
    IF NEW.webhook_url IS NOT NULL THEN
        INSERT INTO kern_run_outbox (run_id, agent_name, kind) VALUES (NEW.id, NEW.agent_name, 'webhook');
    END IF;
    RETURN NULL;
END;
$$;

-- Statuses only move forward, so a run becomes terminal once: the trigger
-- fires once per run.
CREATE TRIGGER kern_run_became_terminal
    AFTER UPDATE OF status ON kern_run
    FOR EACH ROW
    WHEN (OLD.status NOT IN ('completed', 'error', 'cancelled')
          AND NEW.status IN ('completed', 'error', 'cancelled'))
    EXECUTE FUNCTION kern_run_outbox_enqueue();

-- No statement inserts a run terminal today; should one, it is covered too.
CREATE TRIGGER kern_run_inserted_terminal
    AFTER INSERT ON kern_run
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'error', 'cancelled'))
    EXECUTE FUNCTION kern_run_outbox_enqueue();

---- create above / drop below ----

DROP TRIGGER kern_run_inserted_terminal ON kern_run;
DROP TRIGGER kern_run_became_terminal ON kern_run;
DROP FUNCTION kern_run_outbox_enqueue();
DROP TABLE kern_run_outbox;
-- webhook_url belongs to 009 (the submit side); its down migration drops it.
ALTER TABLE kern_run
    DROP COLUMN webhook_last_error,
    DROP COLUMN webhook_attempts,
    DROP COLUMN webhook_status;
