-- Tenants and API keys, for the HTTP API (package server).
--
-- A run belongs to a tenant: '' is the operator's own (the Go API, the CLI),
-- any other value a tenant of the HTTP API, whose keys see only its runs and
-- schedules. The tenant of a run never changes, so a read may check it once.

ALTER TABLE kern_run ADD COLUMN tenant_id text NOT NULL DEFAULT '';

-- A tenant's run list, newest first (ListParams.TenantID); the operator's
-- unfiltered list keeps kern_run_created_idx.
CREATE INDEX kern_run_tenant_idx ON kern_run (tenant_id, created_at DESC, id DESC) WHERE tenant_id <> '';

-- An idempotency key is the tenant's own: the same key from another tenant
-- creates another run, never returns this one.
DROP INDEX kern_run_idempotency_idx;
CREATE UNIQUE INDEX kern_run_idempotency_idx ON kern_run (tenant_id, agent_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A cancel request names who asked. The operator's ('') applies to the run
-- of that id whoever owns it; a tenant's applies only to a run of that
-- tenant, so a tenant's cancel-before-start of an id can never cancel the
-- run another tenant submits with it. Both may stand for one id.
ALTER TABLE kern_run_cancel ADD COLUMN tenant_id text NOT NULL DEFAULT '';
ALTER TABLE kern_run_cancel DROP CONSTRAINT kern_run_cancel_pkey;
ALTER TABLE kern_run_cancel ADD PRIMARY KEY (run_id, tenant_id);

-- Workers are told of a tenant's request only when the run is that tenant's
-- (a request for an id with no run yet is found by the claim instead).
CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = '' OR EXISTS (SELECT 1 FROM kern_run WHERE id = NEW.run_id AND tenant_id = NEW.tenant_id) THEN
        PERFORM pg_notify('kern_cancel', NEW.run_id);
    END IF;
    RETURN NULL;
END;
$$;

-- Schedules are named per tenant; the runs they fire are the tenant's.
ALTER TABLE kern_schedule ADD COLUMN tenant_id text NOT NULL DEFAULT '';
ALTER TABLE kern_schedule DROP CONSTRAINT kern_schedule_pkey;
ALTER TABLE kern_schedule ADD PRIMARY KEY (tenant_id, name);

-- API keys. Only a SHA-256 of the secret is kept: the secret has 256 random
-- bits, so a slow password hash would add nothing, and a lookup by hash
-- needs no comparison of secrets at all (the server still compares the
-- hash it read in constant time).
CREATE TABLE kern_api_key (
    name       text        PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 255),
    tenant_id  text        NOT NULL CHECK (char_length(tenant_id) BETWEEN 1 AND 255),
    secret_sha256 bytea    NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

---- create above / drop below ----
DROP TABLE kern_api_key;
DELETE FROM kern_schedule WHERE tenant_id <> '';
ALTER TABLE kern_schedule DROP CONSTRAINT kern_schedule_pkey;
ALTER TABLE kern_schedule ADD PRIMARY KEY (name);
ALTER TABLE kern_schedule DROP COLUMN tenant_id;
CREATE OR REPLACE FUNCTION kern_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kern_cancel', NEW.run_id);
    RETURN NULL;
END;
$$;
DELETE FROM kern_run_cancel WHERE tenant_id <> '';
ALTER TABLE kern_run_cancel DROP CONSTRAINT kern_run_cancel_pkey;
ALTER TABLE kern_run_cancel ADD PRIMARY KEY (run_id);
ALTER TABLE kern_run_cancel DROP COLUMN tenant_id;
DROP INDEX kern_run_idempotency_idx;
CREATE UNIQUE INDEX kern_run_idempotency_idx ON kern_run (agent_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX kern_run_tenant_idx;
ALTER TABLE kern_run DROP COLUMN tenant_id;
