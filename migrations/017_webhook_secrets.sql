-- A tenant's own webhook signing secret (db.TenantDB.RotateWebhookSecret):
-- its deliveries are signed with it, so a receiver holding one tenant's
-- secret verifies none of another tenant's deliveries. One row per tenant;
-- rotating replaces it. The operator's own runs (tenant "") are signed by
-- the workers' WorkerConfig.WebhookSecret and have no row here.
--
-- The secret is stored as it is, not hashed like an API key's: the worker
-- must compute HMAC-SHA256 with it for every delivery, which a hash (or any
-- one-way form) does not allow. It is never read back by any API: only the
-- worker's delivery reads it.
CREATE TABLE kern_webhook_secret (
    tenant_id  text PRIMARY KEY CHECK (tenant_id <> ''),
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

---- create above / drop below ----

DROP TABLE kern_webhook_secret;
