-- Notification channels carry the schema of kern's tables, as River's do
-- ("<schema>.river_insert"): two kern installs in two schemas of one
-- database (db.WithSchema) must not wake each other's waiters and workers.
-- The channel is named after the schema of the table that fired the
-- trigger, so it is right whatever the session's search_path; the
-- listener LISTENs on "<its schema>.kern_cancel" and ".kern_event".
--
-- During a rolling deploy a process of the previous release listens on the
-- bare names and hears nothing any more: its waiters and cancel watchers
-- fall back to the listener's re-check (every second) until it is replaced.

CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.kern_cancel', NEW.run_id);
    RETURN NULL;
END;
$$;

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
        PERFORM pg_notify(TG_TABLE_SCHEMA || '.kern_event', r.run_id || CASE WHEN r.done THEN E'\x1fdone' ELSE '' END);
    END LOOP;
    RETURN NULL;
END;
$$;

---- create above / drop below ----

CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kern_cancel', NEW.run_id);
    RETURN NULL;
END;
$$;

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
