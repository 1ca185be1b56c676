package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// schemas lists the database's schemas.
func schemas(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	rows, err := pool.Query(ctx, "SELECT nspname FROM pg_namespace ORDER BY nspname")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(names, ",")
}

// A schema name that is no plain lower-case identifier, or too long for
// River's channel names, is refused by Open and New with
// run.ErrInvalidArgument, and nothing is created.
func TestBadSchemaNameIsRefused(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, kerntest.WithPoolSize(dbURL, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	before := schemas(t, ctx, pool)
	for _, name := range []string{
		"", "App", "a-b", "1x", "pg_kern", "a.b", `x"; DROP TABLE y; --`, "kern schema",
		strings.Repeat("k", db.MaxSchemaLength+1), "ké",
	} {
		if d, err := db.Open(ctx, dbURL, db.WithSchema(name)); !errors.Is(err, run.ErrInvalidArgument) {
			if d != nil {
				d.Close()
			}
			t.Errorf("Open with schema %q: %v; want run.ErrInvalidArgument", name, err)
		}
		if _, err := db.New(pool, db.WithSchema(name)); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("New with schema %q: %v; want run.ErrInvalidArgument", name, err)
		}
	}
	if after := schemas(t, ctx, pool); after != before {
		t.Errorf("schemas were %s, are %s after the refusals", before, after)
	}
	// The longest name allowed works, River's channels included.
	long := strings.Repeat("k", db.MaxSchemaLength)
	d, err := db.Open(ctx, kerntest.WithPoolSize(dbURL, 2), db.WithSchema(long))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate schema %s: %v", long, err)
	}
}

// New takes an application's pool with kern's schema only when the pool's
// connections already resolve names in it: otherwise kern's tables would
// land in (or be read from) another schema.
func TestNewChecksThePoolsSearchPath(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	dbURL := pgtest.NewDatabase(t)
	plain, err := pgxpool.New(ctx, kerntest.WithPoolSize(dbURL, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := db.New(plain, db.WithSchema("app")); !errors.Is(err, run.ErrInvalidArgument) || !strings.Contains(err.Error(), "search_path") {
		t.Fatalf("New on a pool without the schema's search_path: %v; want run.ErrInvalidArgument naming search_path", err)
	}

	cfg, err := pgxpool.ParseConfig(kerntest.WithPoolSize(dbURL, 4))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = "app"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	d, err := db.New(pool, db.WithSchema("app")) // the schema need not exist yet
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "r1", AgentName: "a", Input: "x"}); err != nil {
		t.Fatal(err)
	}
	var where string
	if err := pool.QueryRow(ctx, "SELECT schemaname FROM pg_tables WHERE tablename = 'kern_run'").Scan(&where); err != nil || where != "app" {
		t.Fatalf("kern_run is in %q (%v); want app", where, err)
	}
	if _, err := db.New(pool, db.WithSchema("app")); err != nil { // now current_schema() says it
		t.Fatalf("New again: %v", err)
	}
}

// A submit in the caller's transaction goes to kern's schema only: a
// transaction whose search_path resolves elsewhere (public, here holding
// another kern install) is refused, and neither install gets the run.
func TestSubmitInTxChecksTheSchema(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	dbURL := kerntest.DatabaseURL(t) // kern migrated in public
	inPublic := kerntest.Open(t, dbURL)
	d, err := db.Open(ctx, kerntest.WithPoolSize(dbURL, 2), db.WithSchema("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := inPublic.Pool().Begin(ctx) // search_path: public
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) // a failed test must not leave the pool waiting for it
	_, err = d.SubmitRun(ctx, db.SubmitParams{RunID: "tx-1", AgentName: "a", Input: "x", Enqueue: true, Tx: tx})
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("submit in a transaction of schema public: %v; want run.ErrInvalidArgument", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*db.DB{inPublic, d} {
		if _, err := x.GetRun(ctx, "tx-1"); !errors.Is(err, run.ErrNotFound) {
			t.Errorf("run tx-1 in schema %q: %v; want run.ErrNotFound", x.Schema(), err)
		}
	}

	tx, err = d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "tx-2", AgentName: "a", Input: "x", Enqueue: true, Tx: tx}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetRun(ctx, "tx-2"); err != nil {
		t.Fatal(err)
	}
}
