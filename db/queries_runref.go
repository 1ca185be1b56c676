package db

// The statements of run-id look-ups by prefix (runref.go). A run's id is
// its key past its tenant (runkey.go): runIDExpr.

// runIDExpr is a kern_run row's run id, from its key.
const runIDExpr = `CASE WHEN tenant_id = '' THEN id ELSE substr(id, length(tenant_id) + 2) END`

// sqlRunsWithID finds the runs of id $1, of tenant $2 (empty: every
// tenant's): the primary key and kern_run_tenant_run_id_idx serve it.
const sqlRunsWithID = `SELECT ` + runIDExpr + `, tenant_id FROM kern_run
WHERE (id = $1 OR (tenant_id <> '' AND substr(id, length(tenant_id) + 2) = $1)) AND $2 IN ('', tenant_id)
ORDER BY tenant_id LIMIT $3`

// sqlRunsWithIDPrefix finds the runs whose id starts with $1, newest first.
// It reads the table (a person's look-up, not a hot path).
const sqlRunsWithIDPrefix = `SELECT ` + runIDExpr + `, tenant_id FROM kern_run
WHERE starts_with(` + runIDExpr + `, $1) AND $2 IN ('', tenant_id)
ORDER BY created_at DESC, id DESC LIMIT $3`

// sqlCountRunsWithIDPrefixes counts the runs whose first $3 characters
// are one of $1 (all of length $3): one pass over the runs.
const sqlCountRunsWithIDPrefixes = `SELECT count(*) FROM kern_run
WHERE left(` + runIDExpr + `, $3) = ANY($1::text[]) AND $2 IN ('', tenant_id)`
