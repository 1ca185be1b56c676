-- Sessions and concurrency keys are a tenant's own (Hardening issue). See
-- db's package doc, "Sessions" and "Runs per concurrency key".
--
-- A session id or a concurrency key names something only within its
-- tenant: tenant "a"'s session "support-42" is another conversation than
-- tenant "b"'s, and their runs of key "customer-7" count against different
-- limits. So both indexes lead with the name and the tenant together.

-- The history of a session (db's sqlHistory) reads the run's own tenant's
-- runs of the session, newest first from the run; a tenant's list of one
-- session is served the same way. The operator's list of one session
-- across every tenant reads the session's rows and sorts them.
DROP INDEX kern_run_session_idx;
CREATE INDEX kern_run_session_idx ON kern_run (session_id, tenant_id, created_at DESC) WHERE session_id <> '';

-- The claim reads a tenant's key's live runs.
DROP INDEX kern_run_concurrency_idx;
CREATE INDEX kern_run_concurrency_idx ON kern_run (tenant_id, concurrency_key, created_at, id)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'running');

-- kern_refused_by_key (migrations/009) per tenant: a key is the pair
-- (tenant_id, concurrency_key). Its advisory lock is the key's hash seeded
-- with the tenant's, so two tenants' claims of one key name do not wait for
-- each other (but for a hash collision, which only serialises them).
CREATE OR REPLACE FUNCTION kern_refused_by_key(ids text[], limits int[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k       record;
    taken   int;
    refused text[] := '{}';
BEGIN
    FOR k IN
        SELECT r.tenant_id AS tenant, r.concurrency_key AS key,
               hashtextextended(r.concurrency_key, hashtextextended(r.tenant_id, 0)) AS h,
               array_agg(q.id) AS run_ids, array_agg(q.lim) AS lims, max(q.lim) AS most
        FROM unnest(ids, limits) AS q(id, lim)
        JOIN kern_run r ON r.id = q.id
        WHERE r.concurrency_key IS NOT NULL AND q.lim > 0 AND r.status = 'pending'
        GROUP BY r.tenant_id, r.concurrency_key
        ORDER BY 3, 1, 2
    LOOP
        PERFORM pg_advisory_xact_lock(k.h);
        SELECT count(*) INTO taken FROM kern_run
        WHERE tenant_id = k.tenant AND concurrency_key = k.key AND status = 'running';
        refused := refused || ARRAY(
            SELECT q.id
            FROM unnest(k.run_ids, k.lims) AS q(id, lim)
            LEFT JOIN (
                SELECT s.id, row_number() OVER (ORDER BY s.created_at, s.id) AS pos FROM (
                    SELECT id, created_at FROM kern_run
                    WHERE tenant_id = k.tenant AND concurrency_key = k.key AND status = 'pending'
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

CREATE OR REPLACE FUNCTION kern_refused_by_key(ids text[], limits int[]) RETURNS text[]
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
DROP INDEX kern_run_concurrency_idx;
CREATE INDEX kern_run_concurrency_idx ON kern_run (concurrency_key, created_at, id)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'running');
DROP INDEX kern_run_session_idx;
CREATE INDEX kern_run_session_idx ON kern_run (session_id, created_at DESC) WHERE session_id <> '';
