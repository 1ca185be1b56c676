package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/migrations"
)

// migrateLockKey is the session advisory lock that serialises concurrent
// Migrate calls across processes. rivermigrate takes no lock of its own.
const migrateLockKey int64 = 0x6b65726e_6d696772 // "kernmigr"

// schemaVersionTable is where tern records kern's schema version.
const schemaVersionTable = "kern_schema_version"

// Migrate brings River's tables and kern's up to date. It is idempotent and
// safe to call from several processes at once: they take turns on one
// advisory lock, and a migrator that finds the work done does nothing.
// With WithSchema, everything (River's tables, kern's, tern's version
// table) goes in that schema, which Migrate first creates if it is missing
// and the role may (see the package doc, "Deployment: schema and role").
//
// Behind a transaction pooler it runs on the direct URL (WithDirectURL):
// its lock, and tern's, are session locks, which a transaction pooler
// would leave on whichever backend took them. Without a direct URL there
// it refuses with run.ErrInvalidArgument.
func (d *DB) Migrate(ctx context.Context) error {
	pool := d.pool
	switch {
	case d.direct != nil:
		pool = d.direct
	case d.poolMode == PoolModeTransaction:
		return errMigrateNeedsSession
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("kern: migrate: %w", err)
	}
	defer conn.Release()

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("kern: migrate: lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx is done; a broken connection drops the lock anyway.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	}()

	if d.schema != "" {
		if err := ensureSchema(ctx, conn.Conn(), d.schema); err != nil {
			return err
		}
	}
	riverMigrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: d.schema})
	if err != nil {
		return fmt.Errorf("kern: migrate river: %w", err)
	}
	// River's versions must commit one by one (a later one uses an enum
	// value an earlier one adds), so they run on the pool, still under our lock.
	if _, err := riverMigrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("kern: migrate river: %w", err)
	}

	versionTable := schemaVersionTable
	if d.schema != "" {
		versionTable = d.schema + "." + schemaVersionTable // tern asks for it qualified
	}
	m, err := migrate.NewMigrator(ctx, conn.Conn(), versionTable)
	if err != nil {
		return fmt.Errorf("kern: migrate: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return fmt.Errorf("kern: migrate: load: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("kern: migrate: %w", err)
	}
	if err := moveLegacyJobs(ctx, conn.Conn()); err != nil {
		return fmt.Errorf("kern: migrate: move runs to their agents' queues: %w", err)
	}
	return nil
}

// ensureSchema creates schema when it does not exist and the role may
// create schemas in the database; otherwise it says what the role lacks.
// A role that owns the schema (or holds USAGE and CREATE on it) needs
// nothing more.
func ensureSchema(ctx context.Context, conn *pgx.Conn, schema string) error {
	var exists, mayCreateSchema, mayCreateIn bool
	err := conn.QueryRow(ctx, `SELECT n.oid IS NOT NULL,
		has_database_privilege(current_database(), 'CREATE'),
		n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE, CREATE')
		FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $1`, schema).
		Scan(&exists, &mayCreateSchema, &mayCreateIn)
	if err != nil {
		return fmt.Errorf("kern: migrate: schema %q: %w", schema, err)
	}
	switch {
	case exists && !mayCreateIn:
		return fmt.Errorf("kern: migrate: the role may not create tables in schema %q: "+
			"make the role its owner, or grant it USAGE and CREATE on the schema", schema)
	case exists:
		return nil
	case !mayCreateSchema:
		return fmt.Errorf("kern: migrate: schema %q does not exist and the role may not create it: "+
			"have it created with the role as its owner", schema)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("kern: migrate: create schema %q: %w", schema, err)
	}
	return nil
}

// moveLegacyJobs puts the unfinished jobs of the one queue all runs used
// before runs were routed per agent onto their agents' queues, where the
// workers that serve them fetch. It is cheap when there is nothing to move
// (River's fetch index serves it), so every Migrate does it: a submitter of
// the old release still running during a rolling deploy is caught up by
// the next Migrate.
func moveLegacyJobs(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, sqlLegacyAgents, engine.LegacyQueue)
	if err != nil {
		return err
	}
	agents, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, a := range agents {
		if _, err := conn.Exec(ctx, sqlMoveLegacyJobs, engine.LegacyQueue, a, engine.QueueFor(a)); err != nil {
			return err
		}
	}
	return nil
}
