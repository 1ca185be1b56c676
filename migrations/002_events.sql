-- Every run's ordered event log. Seq is allocated from kern_run.event_seq in
-- the same statement that inserts the event, under the run row's lock, so
-- seqs are gap-free per run and commit in order: no reader can see seq 7
-- before seq 6 is committed.
ALTER TABLE kern_run ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE kern_run_event (
    run_id text        NOT NULL,
    seq    bigint      NOT NULL,
    type   text        NOT NULL,
    data   jsonb       NOT NULL DEFAULT '{}',
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- Followers and waiters are woken by one notification per run per
-- statement (not per event row): the payload is the run id, followed by
-- U+001F and "done" when the statement wrote the run's terminal event —
-- which every terminal transition does, whatever its code path. Readers
-- read rows.
CREATE FUNCTION kern_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER kern_run_events_inserted
    AFTER INSERT ON kern_run_event
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION kern_notify_events();

---- create above / drop below ----

DROP TABLE kern_run_event;
DROP FUNCTION kern_notify_events();
ALTER TABLE kern_run DROP COLUMN event_seq;
