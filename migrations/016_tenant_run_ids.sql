-- Run ids are per tenant: two tenants may each have a run "order-7", and
-- neither can tell that the other's exists.
--
-- Every table keeps naming a run by one text column, which now holds the
-- run's key (internal/engine.RunKey): the id itself for the operator's runs
-- (tenant ''), tenant || E'\x1e' || id for a tenant's. Neither a run id nor
-- a tenant id may contain a control character, so a key is unambiguous and
-- no operator's id is ever a tenant's key. Runs, events, steps, answers,
-- cancel requests, outbox rows, rate-limit waiters and River jobs written
-- before this migration are re-keyed here.

-- A key holds a tenant id (at most 255 bytes) as well as the run id.
ALTER TABLE kern_run DROP CONSTRAINT IF EXISTS kern_run_id_check;
ALTER TABLE kern_run ADD CONSTRAINT kern_run_id_check CHECK (char_length(id) BETWEEN 1 AND 520);

CREATE TEMPORARY TABLE kern_rekey ON COMMIT DROP AS
    SELECT id AS old_key, tenant_id || E'\x1e' || id AS new_key
    FROM kern_run WHERE tenant_id <> '' AND position(E'\x1e' IN id) = 0;

-- The answers' foreign key follows its run's key from now on.
ALTER TABLE kern_run_answer DROP CONSTRAINT IF EXISTS kern_run_answer_run_id_fkey;
UPDATE kern_run r SET id = k.new_key FROM kern_rekey k WHERE r.id = k.old_key;
UPDATE kern_run_answer t SET run_id = k.new_key FROM kern_rekey k WHERE t.run_id = k.old_key;
ALTER TABLE kern_run_answer ADD CONSTRAINT kern_run_answer_run_id_fkey
    FOREIGN KEY (run_id) REFERENCES kern_run (id) ON DELETE CASCADE ON UPDATE CASCADE;
UPDATE kern_run_event t SET run_id = k.new_key FROM kern_rekey k WHERE t.run_id = k.old_key;
UPDATE kern_run_step t SET run_id = k.new_key FROM kern_rekey k WHERE t.run_id = k.old_key;
UPDATE kern_run_outbox t SET run_id = k.new_key FROM kern_rekey k WHERE t.run_id = k.old_key;
UPDATE kern_rate_waiter t SET run_id = k.new_key FROM kern_rekey k WHERE t.run_id = k.old_key;
UPDATE river_job j SET args = jsonb_set(j.args, '{run_id}', to_jsonb(k.new_key))
    FROM kern_rekey k
    WHERE j.kind IN ('kern_run', 'kern_complete', 'kern_webhook') AND j.args->>'run_id' = k.old_key;

-- A cancel request names the run by its key too, so it applies to exactly
-- the run of that tenant and id. The operator's requests ('') for an id
-- applied to every tenant's run of it: they become one request per run.
UPDATE kern_run_cancel c SET run_id = c.tenant_id || E'\x1e' || c.run_id, tenant_id = ''
    WHERE c.tenant_id <> '';
INSERT INTO kern_run_cancel (run_id, tenant_id, requested_at)
    SELECT k.new_key, '', c.requested_at
    FROM kern_run_cancel c JOIN kern_rekey k ON k.old_key = c.run_id
    WHERE c.tenant_id = ''
ON CONFLICT DO NOTHING;
DELETE FROM kern_run_cancel c
    WHERE c.tenant_id = '' AND EXISTS (SELECT 1 FROM kern_rekey k WHERE k.old_key = c.run_id)
      AND NOT EXISTS (SELECT 1 FROM kern_run r WHERE r.id = c.run_id);
ALTER TABLE kern_run_cancel DROP CONSTRAINT kern_run_cancel_pkey;
ALTER TABLE kern_run_cancel DROP COLUMN tenant_id;
ALTER TABLE kern_run_cancel ADD PRIMARY KEY (run_id);

CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kern_cancel', NEW.run_id);
    RETURN NULL;
END;
$$;

-- The operator reads a tenant's run by its id (db's operatorKey): the id
-- is the key past the tenant and its separator. Only tenants' runs are in
-- this index, so the operator's own runs cost it nothing.
CREATE INDEX kern_run_tenant_run_id_idx ON kern_run ((substr(id, length(tenant_id) + 2))) WHERE tenant_id <> '';

---- create above / drop below ----

DROP INDEX kern_run_tenant_run_id_idx;
ALTER TABLE kern_run_cancel ADD COLUMN tenant_id text NOT NULL DEFAULT '';
UPDATE kern_run_cancel SET tenant_id = split_part(run_id, E'\x1e', 1), run_id = split_part(run_id, E'\x1e', 2)
    WHERE position(E'\x1e' IN run_id) > 0;
ALTER TABLE kern_run_cancel DROP CONSTRAINT kern_run_cancel_pkey;
ALTER TABLE kern_run_cancel ADD PRIMARY KEY (run_id, tenant_id);
CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = '' OR EXISTS (SELECT 1 FROM kern_run WHERE id = NEW.run_id AND tenant_id = NEW.tenant_id) THEN
        PERFORM pg_notify('kern_cancel', NEW.run_id);
    END IF;
    RETURN NULL;
END;
$$;
-- Going back to global ids is only possible while no two tenants share an
-- id; the keys are turned back into ids.
UPDATE kern_run SET id = substr(id, length(tenant_id) + 2) WHERE tenant_id <> '';
UPDATE kern_run_event SET run_id = split_part(run_id, E'\x1e', 2) WHERE position(E'\x1e' IN run_id) > 0;
UPDATE kern_run_step SET run_id = split_part(run_id, E'\x1e', 2) WHERE position(E'\x1e' IN run_id) > 0;
UPDATE kern_run_outbox SET run_id = split_part(run_id, E'\x1e', 2) WHERE position(E'\x1e' IN run_id) > 0;
UPDATE kern_rate_waiter SET run_id = split_part(run_id, E'\x1e', 2) WHERE position(E'\x1e' IN run_id) > 0;
UPDATE river_job SET args = jsonb_set(args, '{run_id}', to_jsonb(split_part(args->>'run_id', E'\x1e', 2)))
    WHERE kind IN ('kern_run', 'kern_complete', 'kern_webhook') AND position(E'\x1e' IN args->>'run_id') > 0;
ALTER TABLE kern_run DROP CONSTRAINT kern_run_id_check;
ALTER TABLE kern_run ADD CONSTRAINT kern_run_id_check CHECK (char_length(id) BETWEEN 1 AND 255);
