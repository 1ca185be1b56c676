-- Per-key concurrency, scheduled runs and webhooks (operator issue). See
-- db's package doc, "Runs per concurrency key".
--
--   concurrency_key WithConcurrencyKey: at most WorkerConfig.MaxRunsPerKey
--                   runs of one key are running at once, across every
--                   worker; NULL for none.
--   webhook_url     WithWebhook: where the final run is posted; NULL for none.
--
-- A delayed run (WithStartAt, WithDelay) needs no column: its River job is
-- scheduled for then, and its heartbeat_at, which a pending background run
-- otherwise leaves NULL (or sets to when a retry is due), holds the start
-- time, so that the key's order skips it until it is due.
ALTER TABLE kern_run
    ADD COLUMN concurrency_key text,
    ADD COLUMN webhook_url     text;

-- The claim reads a key's live runs, running ones to count them and
-- pending ones in submit order.
CREATE INDEX kern_run_concurrency_idx ON kern_run (concurrency_key, created_at, id)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'running');

-- kern_refused_by_key is the per-key limit of the claim (db's sqlStartRuns):
-- of the runs ids that claims ask to start, with the limit of the worker
-- asking for each (limits, 0 for none), it returns those the limit refuses.
-- A run may start when it is among the first limit - running due pending
-- runs of its key, oldest first: a key's runs start in submit order, and a
-- run that waits (status 'waiting') or is not due yet (a retry's backoff, a
-- delayed start: heartbeat_at in the future) holds no slot and no turn.
--
-- Two claims of one key must not both win, so each takes a transaction
-- advisory lock on the key's hash first, in hash order (no deadlock between
-- claims of several keys), held until the claim commits. The counts are
-- read after the lock, each query of this VOLATILE function with a snapshot
-- of its own (READ COMMITTED): they see the run the previous holder of the
-- lock started, which the calling statement's snapshot, taken before the
-- lock, would not.
CREATE FUNCTION kern_refused_by_key(ids text[], limits int[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k       record;
    taken   int;
    refused text[] := '{}';
BEGIN
    FOR k IN
        SELECT r.concurrency_key AS key, hashtextextended(r.concurrency_key, 0) AS h,
               array_agg(q.id) AS run_ids, array_agg(q.lim) AS lims, max(q.lim) AS most
        FROM unnest(ids, limits) AS q(id, lim)
        JOIN kern_run r ON r.id = q.id
        WHERE r.concurrency_key IS NOT NULL AND q.lim > 0 AND r.status = 'pending'
        GROUP BY r.concurrency_key
        ORDER BY 2, 1
    LOOP
        PERFORM pg_advisory_xact_lock(k.h);
        SELECT count(*) INTO taken FROM kern_run
        WHERE concurrency_key = k.key AND status = 'running';
        refused := refused || ARRAY(
            SELECT q.id
            FROM unnest(k.run_ids, k.lims) AS q(id, lim)
            LEFT JOIN (
                SELECT s.id, row_number() OVER (ORDER BY s.created_at, s.id) AS pos FROM (
                    SELECT id, created_at FROM kern_run
                    WHERE concurrency_key = k.key AND status = 'pending'
                      AND (heartbeat_at IS NULL OR heartbeat_at <= clock_timestamp())
                    ORDER BY created_at, id
                    LIMIT greatest(k.most - taken, 0)) s
            ) turn ON turn.id = q.id
            WHERE turn.pos IS NULL OR turn.pos > q.lim - taken);
    END LOOP;
    RETURN refused;
END;
$$;

---- create above / drop below ----

DROP FUNCTION kern_refused_by_key(text[], int[]);
DROP INDEX kern_run_concurrency_idx;
ALTER TABLE kern_run
    DROP COLUMN webhook_url,
    DROP COLUMN concurrency_key;
