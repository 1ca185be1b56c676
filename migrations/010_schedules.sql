-- Recurring runs (db.DB.PutSchedule): a schedule fires one run of its agent
-- at each due time, through the workers that serve that agent. See db's
-- package doc, "Recurring schedules".
--
--   cron, timezone  what PutSchedule validated: the cron text as given and
--                   the IANA zone it is read in.
--   next_run_at     the next due time. A worker's pass locks the due rows
--                   (FOR UPDATE SKIP LOCKED), submits each one's run and
--                   moves next_run_at past now in the same transaction: one
--                   run per due time, and ticks missed while no worker ran
--                   fire once.
--   last_run_id     the run fired last; not a foreign key, since retention
--                   deletes runs and the schedule lives on.
CREATE TABLE kern_schedule (
    name        text        PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 255),
    agent_name  text        NOT NULL,
    prompt      text        NOT NULL,
    cron        text        NOT NULL,
    timezone    text        NOT NULL DEFAULT 'UTC',
    session_id  text        NOT NULL DEFAULT '',
    -- json, not jsonb, as kern_run's: the fired runs get it exactly as stored.
    metadata    json        NOT NULL DEFAULT '{}',
    paused      boolean     NOT NULL DEFAULT false,
    next_run_at timestamptz NOT NULL,
    last_run_id text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The workers' passes: the due schedules of the agents they serve, and the
-- earliest next due time (when to look again).
CREATE INDEX kern_schedule_due_idx ON kern_schedule (agent_name, next_run_at) WHERE NOT paused;

---- create above / drop below ----
DROP TABLE kern_schedule;
