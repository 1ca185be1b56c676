-- Idempotent submit: one run per (agent, key). The unique index is what makes
-- it race-free across processes.
ALTER TABLE kern_run ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX kern_run_idempotency_idx ON kern_run (agent_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The rescuer's look for pending runs whose job was lost.
CREATE INDEX kern_run_pending_idx ON kern_run (created_at) WHERE status = 'pending';

---- create above / drop below ----

DROP INDEX kern_run_pending_idx;
DROP INDEX kern_run_idempotency_idx;
ALTER TABLE kern_run DROP COLUMN idempotency_key;
