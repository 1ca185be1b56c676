package db

// The statements of run-id look-ups by prefix (runref.go).

// sqlRunsWithID finds the runs of id $1, of tenant $2 (empty: every tenant's).
const sqlRunsWithID = `SELECT id, tenant_id FROM kern_run
WHERE id = $1 AND $2 IN ('', tenant_id)
ORDER BY tenant_id LIMIT $3`

// sqlRunsWithIDPrefix finds the runs whose id starts with $1, newest first.
// starts_with can use the primary key only in the C collation; elsewhere
// it reads the table (a person's look-up, not a hot path).
const sqlRunsWithIDPrefix = `SELECT id, tenant_id FROM kern_run
WHERE starts_with(id, $1) AND $2 IN ('', tenant_id)
ORDER BY created_at DESC, id DESC LIMIT $3`

// sqlCountRunsWithIDPrefixes counts the runs whose first $3 characters
// are one of $1 (all of length $3): one pass over the runs.
const sqlCountRunsWithIDPrefixes = `SELECT count(*) FROM kern_run
WHERE left(id, $3) = ANY($1::text[]) AND $2 IN ('', tenant_id)`
