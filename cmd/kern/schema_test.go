package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
)

// --schema and $KERN_SCHEMA put kern's and River's tables in a schema of
// the user's choice, for every command that opens the database; the flag
// wins over the variable; a bad name is refused before anything is made.
func TestSchemaFlagAndEnv(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := pgtest.NewDatabase(t)
	if r := kernExec(t, ctx, url, "", "migrate", "--schema", "Bad-Name"); r.code == 0 || !strings.Contains(r.stderr, "Bad-Name") {
		t.Fatalf("migrate --schema Bad-Name: exit %d, stderr %q", r.code, r.stderr)
	}
	kern(t, ctx, url, "migrate", "--schema", "app_c")
	withEnv := func(args ...string) kernResult {
		t.Helper()
		r := runKern(t, ctx, "", []string{"NO_COLOR=", "KERN_SCHEMA=app_c"}, append([]string{"--database-url", kerntest.WithPoolSize(url, 2)}, args...)...)
		if r.code != 0 {
			t.Fatalf("KERN_SCHEMA=app_c kern %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
		return r
	}
	withEnv("runs", "submit", "--agent", "idle", "--run-id", "in-c", "hello")
	if out := withEnv("runs", "list").stdout; !strings.Contains(out, "in-c") {
		t.Fatalf("runs list with KERN_SCHEMA=app_c does not show in-c:\n%s", out)
	}
	// The flag wins: public has no kern tables, so this fails.
	r := runKern(t, ctx, "", []string{"NO_COLOR=", "KERN_SCHEMA=app_c"}, "--database-url", kerntest.WithPoolSize(url, 2), "--schema", "public", "runs", "list")
	if r.code == 0 {
		t.Fatalf("runs list --schema public listed runs of app_c:\n%s", r.stdout)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var where string
	if err := conn.QueryRow(ctx, "SELECT string_agg(schemaname, ',') FROM pg_tables WHERE tablename IN ('kern_run', 'river_job')").Scan(&where); err != nil {
		t.Fatal(err)
	}
	if where != "app_c,app_c" {
		t.Fatalf("kern_run and river_job are in %q; want app_c only", where)
	}
}
