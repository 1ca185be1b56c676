package db

// The statements of API keys (apikey.go); the table is in
// ../migrations/012_tenants.sql.

const sqlCreateAPIKey = `INSERT INTO kern_api_key (name, tenant_id, secret_sha256) VALUES ($1, $2, $3)`

const sqlRevokeAPIKey = `UPDATE kern_api_key SET revoked_at = COALESCE(revoked_at, now()) WHERE name = $1`

const sqlListAPIKeys = `SELECT name, tenant_id, created_at, revoked_at FROM kern_api_key ORDER BY name`

const sqlAuthenticateAPIKey = `SELECT tenant_id, secret_sha256 FROM kern_api_key WHERE secret_sha256 = $1 AND revoked_at IS NULL`
