-- Budget leases (see db/ratelimit_lease.go): a worker process takes a
-- chunk of a model's budget in one statement and spends it locally, so a
-- limit that does not bind costs about one statement per process per lease
-- instead of two per model call. In short:
--
--   - A grant may now count several requests: kern_rate_grant.requests
--     (1 for the per-call grants of kern_rate_reserve). The totals in
--     kern_rate_limit are sums over the grants in the window, as before.
--   - A lease is one grant of n requests and t tokens, decided under the
--     model's row lock like any reservation. Its holder may start calls
--     from it only during its life (LEAST(500 ms, window / 20), measured by
--     the holder from before it sent the statement, so never longer), and
--     the grant is dated at the end of that life: it leaves the window one
--     window after the last moment a call may start from it. So the window
--     rule holds for calls' start times, whoever spent the lease and when.
--   - Deltas: a holder reports later, with its next statement on the model,
--     how much of a lease it did not spend (negative requests and tokens:
--     the budget frees at once) and how the tokens its calls reported
--     differ from the estimates it spent (the reconciliation). A delta for
--     a grant that left the window changes nothing.

ALTER TABLE kern_rate_grant ADD COLUMN requests integer NOT NULL DEFAULT 1 CHECK (requests >= 0);

-- kern_rate_apply moves model m's grants by the deltas of p_ids (entries of
-- other models are skipped) and its totals by what was applied; the caller
-- holds m's row lock. Figures never go below zero.
CREATE FUNCTION kern_rate_apply(m text, p_ids bigint[], p_models text[], p_dreq integer[], p_dtok integer[])
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_req bigint;
    v_tok bigint;
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    WITH req AS (
        SELECT r.id, sum(r.dreq)::bigint AS dreq, sum(r.dtok)::bigint AS dtok
        FROM unnest(p_ids, p_models, p_dreq, p_dtok) AS r(id, model, dreq, dtok)
        WHERE r.model = m GROUP BY r.id
    ), old AS (
        SELECT g.id, g.requests, g.tokens FROM kern_rate_grant g JOIN req ON req.id = g.id WHERE g.model = m
    ), upd AS (
        UPDATE kern_rate_grant g
        SET requests = LEAST(GREATEST(old.requests + req.dreq, 0), 2147483647),
            tokens = LEAST(GREATEST(old.tokens + req.dtok, 0), 2147483647)
        FROM req, old WHERE g.id = req.id AND old.id = g.id
        RETURNING LEAST(GREATEST(old.requests + req.dreq, 0), 2147483647) - old.requests AS dr,
            LEAST(GREATEST(old.tokens + req.dtok, 0), 2147483647) - old.tokens AS dt
    ) SELECT COALESCE(sum(upd.dr), 0), COALESCE(sum(upd.dt), 0) INTO v_req, v_tok FROM upd;
    IF v_req <> 0 OR v_tok <> 0 THEN
        UPDATE kern_rate_limit l SET requests_used = GREATEST(l.requests_used + v_req, 0),
            tokens_used = GREATEST(l.tokens_used + v_tok, 0)
        WHERE l.model = m;
    END IF;
END;
$$;

-- kern_rate_expire deletes model m's grants that left the window at
-- p_now and subtracts them from its totals; the caller holds m's row lock.
CREATE FUNCTION kern_rate_expire(m text, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_req bigint;
    v_tok bigint;
BEGIN
    WITH gone AS (
        DELETE FROM kern_rate_grant g
        USING kern_rate_limit l
        WHERE l.model = m AND g.model = m AND g.at <= p_now - make_interval(secs => l.window_ms / 1000.0)
        RETURNING g.requests, g.tokens
    ) SELECT COALESCE(sum(gone.requests), 0), COALESCE(sum(gone.tokens), 0) INTO v_req, v_tok FROM gone;
    IF v_req <> 0 OR v_tok <> 0 THEN
        UPDATE kern_rate_limit l SET requests_used = GREATEST(l.requests_used - v_req, 0),
            tokens_used = GREATEST(l.tokens_used - v_tok, 0)
        WHERE l.model = m;
    END IF;
END;
$$;

-- kern_rate_settle applies deltas of grants of several models (a
-- process's pending ones, when no reservation took them along): models in
-- name order, each under its row lock.
CREATE FUNCTION kern_rate_settle(p_ids bigint[], p_models text[], p_dreq integer[], p_dtok integer[])
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    m text;
BEGIN
    FOR m IN SELECT DISTINCT u FROM unnest(p_models) AS u ORDER BY 1 LOOP
        PERFORM 1 FROM kern_rate_limit l WHERE l.model = m FOR UPDATE;
        IF FOUND THEN
            PERFORM kern_rate_apply(m, p_ids, p_models, p_dreq, p_dtok);
        END IF;
    END LOOP;
END;
$$;

-- kern_rate_lease asks model p_model for a lease of p_requests requests
-- and p_tokens tokens (at least p_need, the estimate of the call that
-- asks), after applying the deltas given (of this model). The lease is
-- capped at a 20th of each budget (at least one request; at most 65,536
-- requests without a request budget). It is granted in
-- full or refused, never in part; a refusal sends the asker to the exact
-- per-call path (kern_rate_reserve), which queues and throttles. Reasons:
-- 'none' (no limit on file: call freely), 'paused', 'small' (a 20th of the
-- budget is under two requests or two such calls' tokens: leasing buys
-- nothing), 'queue' (runs wait for this budget: a lease must not overtake
-- them), 'requests', 'tokens' (the lease does not fit).
CREATE FUNCTION kern_rate_lease(p_model text, p_requests integer, p_tokens integer, p_need integer,
    p_ids bigint[], p_models text[], p_dreq integer[], p_dtok integer[])
RETURNS TABLE (o_granted boolean, o_grant bigint, o_requests integer, o_tokens integer, o_life_ms integer,
    o_wait_ms bigint, o_reason text, o_rpm integer, o_tpm integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lim    kern_rate_limit%ROWTYPE;
    now_ts timestamptz;
    life   integer;
    n      integer;
    t      integer;
    need   integer := GREATEST(p_need, 0);
    gid    bigint;
BEGIN
    PERFORM 1 FROM kern_rate_limit l WHERE l.model = p_model FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::bigint, 0, 0, 0, 0::bigint, 'none'::text, 0, 0;
        RETURN;
    END IF;
    PERFORM kern_rate_apply(p_model, p_ids, p_models, p_dreq, p_dtok);
    -- The clock is read after the lock, as in kern_rate_reserve.
    now_ts := clock_timestamp();
    PERFORM kern_rate_expire(p_model, now_ts);
    SELECT * INTO lim FROM kern_rate_limit l WHERE l.model = p_model;
    life := LEAST(500, GREATEST(lim.window_ms / 20, 1));
    n := LEAST(GREATEST(p_requests, 1), CASE WHEN lim.requests_per_minute > 0
        THEN GREATEST(lim.requests_per_minute / 20, 1) ELSE 65536 END);
    t := CASE WHEN lim.tokens_per_minute > 0
        THEN LEAST(GREATEST(p_tokens, need), lim.tokens_per_minute / 20) ELSE 0 END;
    o_granted := false; o_grant := NULL; o_requests := 0; o_tokens := 0; o_life_ms := life;
    o_wait_ms := 0; o_reason := ''; o_rpm := lim.requests_per_minute; o_tpm := lim.tokens_per_minute;
    IF lim.paused_until IS NOT NULL AND lim.paused_until > now_ts THEN
        o_reason := 'paused';
        o_wait_ms := ceil(extract(epoch FROM lim.paused_until - now_ts) * 1000)::bigint;
    ELSIF (lim.requests_per_minute > 0 AND lim.requests_per_minute / 20 < 2)
        OR (lim.tokens_per_minute > 0 AND lim.tokens_per_minute / 20 < 2 * GREATEST(need, 1)) THEN
        o_reason := 'small';
    ELSIF EXISTS (SELECT 1 FROM kern_rate_waiter x
                  WHERE x.model = p_model AND x.seen_at >= now_ts - interval '5 seconds') THEN
        o_reason := 'queue';
    ELSIF lim.requests_per_minute > 0 AND lim.requests_used + n > lim.requests_per_minute THEN
        o_reason := 'requests';
    ELSIF lim.tokens_per_minute > 0 AND lim.tokens_used + t > lim.tokens_per_minute THEN
        o_reason := 'tokens';
    ELSE
        INSERT INTO kern_rate_grant (model, at, tokens, requests)
        VALUES (p_model, now_ts + life * interval '1 millisecond', t, n) RETURNING id INTO gid;
        UPDATE kern_rate_limit l SET requests_used = l.requests_used + n, tokens_used = l.tokens_used + t
        WHERE l.model = p_model;
        o_granted := true; o_grant := gid; o_requests := n; o_tokens := t;
    END IF;
    RETURN NEXT;
END;
$$;

-- kern_rate_reserve, with deltas: 014's per-call reservation, which also
-- applies the deltas given (a process's pending ones for the batch's
-- models) under each model's lock before deciding, and counts a grant's
-- requests (a lease's are many) rather than its rows.
CREATE FUNCTION kern_rate_reserve(p_runs text[], p_models text[], p_tokens integer[], p_executions integer[], p_waited boolean[],
    p_ids bigint[], p_dmodels text[], p_dreq integer[], p_dtok integer[])
RETURNS TABLE (o_idx integer, o_granted boolean, o_grant bigint, o_wait_ms bigint, o_reason text, o_rpm integer, o_tpm integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    m        text;
    lim      kern_rate_limit%ROWTYPE;
    now_ts   timestamptz;
    win      interval;
    waiters  boolean;
    it       record;
    w        bigint;
    why      text;
    t        timestamptz;
    gid      bigint;
BEGIN
    FOR m IN SELECT DISTINCT u FROM unnest(p_models) AS u ORDER BY 1 LOOP
        PERFORM 1 FROM kern_rate_limit l WHERE l.model = m FOR UPDATE;
        IF NOT FOUND THEN -- no limit (any more): everything goes
            RETURN QUERY SELECT i::integer, true, NULL::bigint, 0::bigint, ''::text, 0, 0
                FROM generate_subscripts(p_models, 1) AS i WHERE p_models[i] = m;
            CONTINUE;
        END IF;
        PERFORM kern_rate_apply(m, p_ids, p_dmodels, p_dreq, p_dtok);
        now_ts := clock_timestamp();
        PERFORM kern_rate_expire(m, now_ts);
        SELECT * INTO lim FROM kern_rate_limit l WHERE l.model = m;
        win := make_interval(secs => lim.window_ms / 1000.0);
        DELETE FROM kern_rate_waiter x WHERE x.model = m AND x.seen_at < now_ts - interval '5 seconds';
        waiters := EXISTS (SELECT 1 FROM kern_rate_waiter x WHERE x.model = m);

        FOR it IN
            SELECT i::integer AS i, p_runs[i] AS run_id, GREATEST(p_tokens[i], 0) AS tokens,
                p_executions[i] AS execution, p_waited[i] AS waited,
                COALESCE(j.priority, w0.priority, 2) AS priority,
                COALESCE(r.created_at, w0.created_at, now_ts) AS created_at
            FROM generate_subscripts(p_models, 1) AS i
            LEFT JOIN kern_run r ON r.id = p_runs[i]
            LEFT JOIN river_job j ON j.id = r.job_id
            -- A reservation of no run on file keeps the place its waiter
            -- row took (014 dated it anew each time: behind itself).
            LEFT JOIN kern_rate_waiter w0 ON w0.model = m AND w0.run_id = p_runs[i]
            WHERE p_models[i] = m
            ORDER BY 6, 7, 2
        LOOP
            w := 0;
            why := '';
            gid := NULL;
            IF lim.requests_per_minute > 0 AND lim.requests_used + 1 > lim.requests_per_minute THEN
                -- Room comes when the grants that make this one too many
                -- have left the window (a lease counts many requests).
                SELECT s.at INTO t FROM (
                    SELECT g.at, sum(g.requests) OVER (ORDER BY g.at, g.id) AS cum
                    FROM kern_rate_grant g WHERE g.model = m) s
                WHERE s.cum >= lim.requests_used + 1 - lim.requests_per_minute
                ORDER BY s.at LIMIT 1;
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

-- 014's signature, for a process of the release before leases during a
-- rolling deploy: the same decision, counting leases right.
CREATE OR REPLACE FUNCTION kern_rate_reserve(p_runs text[], p_models text[], p_tokens integer[], p_executions integer[], p_waited boolean[])
RETURNS TABLE (o_idx integer, o_granted boolean, o_grant bigint, o_wait_ms bigint, o_reason text, o_rpm integer, o_tpm integer)
LANGUAGE sql AS $$
    SELECT * FROM kern_rate_reserve(p_runs, p_models, p_tokens, p_executions, p_waited,
        '{}'::bigint[], '{}'::text[], '{}'::integer[], '{}'::integer[])
$$;

---- create above / drop below ----

-- Back to 014: leases (grants of many requests) go, the totals are summed
-- again from the grants left, and 014's kern_rate_reserve comes back as it
-- was (the 5-argument function is a wrapper of the 9-argument one here).
DROP FUNCTION kern_rate_reserve(text[], text[], integer[], integer[], boolean[]);
DROP FUNCTION kern_rate_reserve(text[], text[], integer[], integer[], boolean[], bigint[], text[], integer[], integer[]);
DROP FUNCTION kern_rate_lease(text, integer, integer, integer, bigint[], text[], integer[], integer[]);
DROP FUNCTION kern_rate_settle(bigint[], text[], integer[], integer[]);
DROP FUNCTION kern_rate_expire(text, timestamptz);
DROP FUNCTION kern_rate_apply(text, bigint[], text[], integer[], integer[]);
DELETE FROM kern_rate_grant WHERE requests <> 1;
UPDATE kern_rate_limit l SET
    requests_used = (SELECT count(*) FROM kern_rate_grant g WHERE g.model = l.model),
    tokens_used = (SELECT COALESCE(sum(g.tokens), 0) FROM kern_rate_grant g WHERE g.model = l.model);
ALTER TABLE kern_rate_grant DROP COLUMN requests;

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
