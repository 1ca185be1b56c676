-- Event notifications only while someone listens for them.
--
-- Every statement that appends events used to send a NOTIFY per run, and a
-- transaction that notifies takes Postgres's cluster-wide notification
-- lock at commit and holds it through its commit's WAL flush, so notifying
-- writers commit one at a time. A worker fleet that nobody follows paid
-- that on every claim and final write. Now each process whose listener
-- LISTENs on kern_event registers here (and renews before expires_at);
-- the trigger notifies only while a registration is live. A listener
-- registers right after its LISTEN and re-checks its runs soon after, so a
-- statement that ran before the registration was visible is caught by the
-- re-check (db/listener.go).
CREATE TABLE kern_event_listener (
    id         text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

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

---- create above / drop below ----

CREATE OR REPLACE FUNCTION kern_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT run_id, bool_or(type IN ('run.completed', 'run.error', 'run.cancelled')) AS done
        FROM new_events GROUP BY run_id
    LOOP
        PERFORM pg_notify('kern_event', r.run_id || CASE WHEN r.done THEN E'\x1fdone' ELSE '' END);
    END LOOP;
    RETURN NULL;
END;
$$;

DROP TABLE kern_event_listener;
