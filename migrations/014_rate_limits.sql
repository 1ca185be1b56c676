-- Rate limits shared by the fleet: request and token budgets per model id,
-- drawn from by every worker on the database before each model call. See
-- db/ratelimit.go for the design; in short:
--
--   - kern_rate_limit is one row per limited model: its budgets, the window
--     (60 s; tests shorten it), the running totals of the grants in the
--     window, and paused_until (a provider's 429 + Retry-After). The row
--     lock is the model's lock: every statement that changes the model's
--     grants or totals takes it first, so the totals always equal the sum
--     of the grants still in the window.
--   - kern_rate_grant is the sliding log: one row per model call allowed,
--     at Postgres's clock_timestamp(), with the tokens it counts (the
--     estimate, then what the model reported). A reservation first deletes
--     the grants that left the window and subtracts them from the totals,
--     so its check is O(1) plus the grants expiring, not a sum over the
--     window.
--   - kern_rate_waiter lists the runs waiting for budget, with their
--     priority and submit time, so budget that frees goes to the first
--     waiter in (priority, created_at, run id) order. A waiter refreshes
--     seen_at each time it asks again (at least every second); one not seen
--     for 5 s (its worker died) no longer holds anyone back.

CREATE TABLE kern_rate_limit (
    model               text        PRIMARY KEY CHECK (model <> ''),
    requests_per_minute integer     NOT NULL DEFAULT 0 CHECK (requests_per_minute >= 0),
    tokens_per_minute   integer     NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
    window_ms           integer     NOT NULL DEFAULT 60000 CHECK (window_ms > 0),
    requests_used       integer     NOT NULL DEFAULT 0,
    tokens_used         bigint      NOT NULL DEFAULT 0,
    paused_until        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kern_rate_grant (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model  text        NOT NULL,
    at     timestamptz NOT NULL,
    tokens integer     NOT NULL
);
CREATE INDEX kern_rate_grant_model_at_idx ON kern_rate_grant (model, at, id);

CREATE TABLE kern_rate_waiter (
    model      text        NOT NULL,
    run_id     text        NOT NULL,
    priority   integer     NOT NULL,
    created_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    PRIMARY KEY (model, run_id)
);

-- kern_rate_reserve decides a batch of reservations: item i is run
-- p_runs[i] (execution p_executions[i]) asking model p_models[i] for one
-- request and p_tokens[i] tokens; p_waited[i] says it waited before (its
-- waiter row goes, and its run's error, which said why it waited, is
-- cleared when it is granted). Models are taken in name order (no two
-- batches deadlock), each under its row lock; within a model, items go in
-- (priority, created_at, run id) order, each seeing the grants of the items
-- before it. It returns one row per item: granted or not, the grant's id,
-- and for a refusal how long until it may succeed (wait_ms) and why
-- ('paused', 'requests', 'tokens' or 'queue': a run that comes first
-- waits).
CREATE FUNCTION kern_rate_reserve(p_runs text[], p_models text[], p_tokens integer[], p_executions integer[], p_waited boolean[])
RETURNS TABLE (o_idx integer, o_granted boolean, o_grant bigint, o_wait_ms bigint, o_reason text, o_rpm integer, o_tpm integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    m        text;
    lim      kern_rate_limit%ROWTYPE;
    now_ts   timestamptz;
    win      interval;
    gone_n   integer;
    gone_t   bigint;
    waiters  boolean;
    it       record;
    w        bigint;
    why      text;
    t        timestamptz;
    gid      bigint;
BEGIN
    FOR m IN SELECT DISTINCT u FROM unnest(p_models) AS u ORDER BY 1 LOOP
        SELECT * INTO lim FROM kern_rate_limit l WHERE l.model = m FOR UPDATE;
        IF NOT FOUND THEN -- no limit (any more): everything goes
            RETURN QUERY SELECT i::integer, true, NULL::bigint, 0::bigint, ''::text, 0, 0
                FROM generate_subscripts(p_models, 1) AS i WHERE p_models[i] = m;
            CONTINUE;
        END IF;
        -- The clock is read after the lock: the previous holder's grants
        -- are all before it.
        now_ts := clock_timestamp();
        win := make_interval(secs => lim.window_ms / 1000.0);
        WITH gone AS (
            DELETE FROM kern_rate_grant g WHERE g.model = m AND g.at <= now_ts - win RETURNING g.tokens
        ) SELECT count(*), COALESCE(sum(gone.tokens), 0) INTO gone_n, gone_t FROM gone;
        lim.requests_used := GREATEST(lim.requests_used - gone_n, 0);
        lim.tokens_used := GREATEST(lim.tokens_used - gone_t, 0);
        DELETE FROM kern_rate_waiter x WHERE x.model = m AND x.seen_at < now_ts - interval '5 seconds';
        waiters := EXISTS (SELECT 1 FROM kern_rate_waiter x WHERE x.model = m);

        FOR it IN
            SELECT i::integer AS i, p_runs[i] AS run_id, GREATEST(p_tokens[i], 0) AS tokens,
                p_executions[i] AS execution, p_waited[i] AS waited,
                COALESCE(j.priority, 2) AS priority, COALESCE(r.created_at, now_ts) AS created_at
            FROM generate_subscripts(p_models, 1) AS i
            LEFT JOIN kern_run r ON r.id = p_runs[i]
            LEFT JOIN river_job j ON j.id = r.job_id
            WHERE p_models[i] = m
            ORDER BY 6, 7, 2
        LOOP
            w := 0;
            why := '';
            gid := NULL;
            IF lim.requests_per_minute > 0 AND lim.requests_used + 1 > lim.requests_per_minute THEN
                -- Room comes when the grant that would make this one
                -- too many leaves the window.
                SELECT g.at INTO t FROM kern_rate_grant g WHERE g.model = m
                    ORDER BY g.at, g.id OFFSET lim.requests_used - lim.requests_per_minute LIMIT 1;
                w := GREATEST(ceil(extract(epoch FROM COALESCE(t, now_ts) + win - now_ts) * 1000)::bigint, 1);
                why := 'requests';
            END IF;
            -- A reservation larger than the whole token budget goes alone,
            -- into an empty window, or it would never go.
            IF lim.tokens_per_minute > 0 AND lim.tokens_used > 0
                AND lim.tokens_used + it.tokens > lim.tokens_per_minute THEN
                SELECT s.at INTO t FROM (
                    SELECT g.at, sum(g.tokens) OVER (ORDER BY g.at, g.id) AS cum
                    FROM kern_rate_grant g WHERE g.model = m) s
                WHERE s.cum >= lim.tokens_used + it.tokens - lim.tokens_per_minute
                ORDER BY s.at LIMIT 1;
                IF GREATEST(ceil(extract(epoch FROM COALESCE(t, now_ts) + win - now_ts) * 1000)::bigint, 1) > w THEN
                    w := GREATEST(ceil(extract(epoch FROM COALESCE(t, now_ts) + win - now_ts) * 1000)::bigint, 1);
                    why := 'tokens';
                END IF;
            END IF;
            IF lim.paused_until IS NOT NULL AND lim.paused_until > now_ts
                AND ceil(extract(epoch FROM lim.paused_until - now_ts) * 1000)::bigint >= w THEN
                w := ceil(extract(epoch FROM lim.paused_until - now_ts) * 1000)::bigint;
                why := 'paused';
            END IF;
            IF w = 0 AND waiters AND EXISTS (
                SELECT 1 FROM kern_rate_waiter x
                WHERE x.model = m AND x.run_id <> it.run_id
                  AND (x.priority, x.created_at, x.run_id) < (it.priority, it.created_at, it.run_id)) THEN
                -- The budget is there, but a run that comes first waits for
                -- it: it asks again at once, this one a moment later.
                w := 25;
                why := 'queue';
            END IF;

            IF w = 0 THEN
                IF lim.requests_per_minute > 0 OR lim.tokens_per_minute > 0 THEN
                    INSERT INTO kern_rate_grant (model, at, tokens) VALUES (m, now_ts, it.tokens) RETURNING id INTO gid;
                    lim.requests_used := lim.requests_used + 1;
                    lim.tokens_used := lim.tokens_used + it.tokens;
                END IF;
                IF it.waited THEN
                    DELETE FROM kern_rate_waiter x WHERE x.model = m AND x.run_id = it.run_id;
                    UPDATE kern_run SET error = ''
                    WHERE id = it.run_id AND status = 'running' AND execution = it.execution;
                END IF;
            ELSE
                INSERT INTO kern_rate_waiter (model, run_id, priority, created_at, seen_at)
                VALUES (m, it.run_id, it.priority, it.created_at, now_ts)
                ON CONFLICT (model, run_id) DO UPDATE SET seen_at = EXCLUDED.seen_at;
                waiters := true;
            END IF;
            o_idx := it.i;
            o_granted := w = 0;
            o_grant := gid;
            o_wait_ms := w;
            o_reason := why;
            o_rpm := lim.requests_per_minute;
            o_tpm := lim.tokens_per_minute;
            RETURN NEXT;
        END LOOP;
        UPDATE kern_rate_limit l SET requests_used = lim.requests_used, tokens_used = lim.tokens_used
        WHERE l.model = m;
    END LOOP;
END;
$$;

-- kern_rate_reconcile replaces the estimates of grants p_ids (of models
-- p_models) with the tokens their calls reported, p_tokens, and moves the
-- models' totals by the difference. A grant that left the window already is
-- gone, and nothing changes: its tokens no longer count either way.
CREATE FUNCTION kern_rate_reconcile(p_ids bigint[], p_models text[], p_tokens integer[])
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    m text;
    d bigint;
BEGIN
    FOR m IN SELECT DISTINCT u FROM unnest(p_models) AS u ORDER BY 1 LOOP
        PERFORM 1 FROM kern_rate_limit l WHERE l.model = m FOR UPDATE;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        WITH req AS (
            SELECT r.id, GREATEST(r.tokens, 0) AS tokens FROM unnest(p_ids, p_models, p_tokens) AS r(id, model, tokens)
            WHERE r.model = m
        ), old AS (
            SELECT g.id, g.tokens FROM kern_rate_grant g JOIN req ON req.id = g.id WHERE g.model = m
        ), upd AS (
            UPDATE kern_rate_grant g SET tokens = req.tokens FROM req, old
            WHERE g.id = req.id AND old.id = g.id
            RETURNING req.tokens - old.tokens AS delta
        ) SELECT COALESCE(sum(upd.delta), 0) INTO d FROM upd;
        UPDATE kern_rate_limit l SET tokens_used = GREATEST(l.tokens_used + d, 0) WHERE l.model = m;
    END LOOP;
END;
$$;

---- create above / drop below ----

DROP FUNCTION kern_rate_reconcile(bigint[], text[], integer[]);
DROP FUNCTION kern_rate_reserve(text[], text[], integer[], integer[], boolean[]);
DROP TABLE kern_rate_waiter;
DROP TABLE kern_rate_grant;
DROP TABLE kern_rate_limit;
