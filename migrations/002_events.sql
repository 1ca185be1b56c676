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

-- Followers are woken per run; the payload is the run id, they read rows.
CREATE FUNCTION kern_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kern_event', NEW.run_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER kern_run_event_inserted
    AFTER INSERT ON kern_run_event
    FOR EACH ROW
    EXECUTE FUNCTION kern_notify_event();

---- create above / drop below ----

DROP TABLE kern_run_event;
DROP FUNCTION kern_notify_event();
ALTER TABLE kern_run DROP COLUMN event_seq;
