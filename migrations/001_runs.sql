-- One row per run: never a JSON array of runs, so concurrent runs of one
-- session never overwrite each other.
CREATE TABLE kern_run (
    id              text        PRIMARY KEY,
    session_id      text        NOT NULL DEFAULT '',
    agent_name      text        NOT NULL,
    name            text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'error', 'cancelled')),
    input           text        NOT NULL,
    content         text        NOT NULL DEFAULT '',
    error           text        NOT NULL DEFAULT '',
    -- json, not jsonb: it keeps metadata exactly as given, "\u0000" included.
    metadata        json        NOT NULL DEFAULT '{}',
    -- The execution that owns the row. Every write of a worker is fenced by
    -- it, so a zombie from an earlier attempt cannot touch a run that moved on.
    attempt         integer     NOT NULL DEFAULT 0,
    timeout_ms      bigint      NOT NULL DEFAULT 0,
    job_id          bigint,
    input_tokens    integer     NOT NULL DEFAULT 0,
    output_tokens   integer     NOT NULL DEFAULT 0,
    total_tokens    integer     NOT NULL DEFAULT 0,
    ttft_us         bigint      NOT NULL DEFAULT 0,
    duration_us     bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    finished_at     timestamptz,
    CHECK (char_length(id) BETWEEN 1 AND 255)
)
-- Room on each page so that content flushes and heartbeats, which change no
-- indexed column, can be HOT updates (no index writes).
WITH (fillfactor = 80);

CREATE INDEX kern_run_session_idx ON kern_run (session_id, created_at DESC) WHERE session_id <> '';
CREATE INDEX kern_run_created_idx ON kern_run (created_at DESC, id DESC);
-- The rescuer's look at running runs. heartbeat_at itself is not indexed:
-- heartbeats would then never be HOT updates.
CREATE INDEX kern_run_running_idx ON kern_run (id) WHERE status = 'running';

-- A cancel request. A row may exist before its run does (cancel-before-start),
-- which is why it is not a foreign key.
CREATE TABLE kern_run_cancel (
    run_id       text        PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Executing workers are told at once that their run was cancelled.
CREATE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kern_cancel', NEW.run_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER kern_run_cancel_requested
    AFTER INSERT ON kern_run_cancel
    FOR EACH ROW
    EXECUTE FUNCTION kern_notify_cancel();

---- create above / drop below ----

DROP TABLE kern_run_cancel;
DROP TABLE kern_run;
DROP FUNCTION kern_notify_cancel();
