package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestStartStock: a stock cluster runs with Postgres's durable defaults, on
// disk, hands out databases (also from a template, with CREATE DATABASE's
// default strategy) and is gone after Stop.
func TestStartStock(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := StartStock(ctx)
	if errors.Is(err, ErrNoLocalPostgres) {
		t.Skipf("needs a local PostgreSQL server install (initdb, pg_ctl): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	if srv.Kind != KindInitdbStock {
		t.Errorf("Kind = %q, want %q", srv.Kind, KindInitdbStock)
	}
	data, ok := srv.DataDir()
	if !ok {
		t.Fatal("no DataDir for a stock cluster")
	}
	t.Logf("data dir %s", data)
	if isTmpfs(data) && !isTmpfs(os.TempDir()) {
		t.Errorf("data dir %s is on a tmpfs although TMPDIR %s is not", data, os.TempDir())
	}
	for setting, want := range map[string]string{
		"fsync":              "on",
		"synchronous_commit": "on",
		"full_page_writes":   "on",
		"shared_buffers":     "128MB",
		"listen_addresses":   "127.0.0.1",
	} {
		if got := query[string](t, srv.AdminURL, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got, want := query[string](t, srv.AdminURL, "SELECT setting FROM pg_settings WHERE name = 'max_wal_size'"),
		query[string](t, srv.AdminURL, "SELECT boot_val FROM pg_settings WHERE name = 'max_wal_size'"); got != want {
		t.Errorf("max_wal_size = %s, want the default %s", got, want)
	}
	if srv.fileCopy {
		t.Error("stock cluster (fsync on) would create databases with STRATEGY FILE_COPY")
	}

	dbURL, err := srv.migratedDatabase(ctx, "kern_test", "stock", func(ctx context.Context, url string) error {
		execSQL(t, url, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := query[int](t, dbURL, "SELECT v FROM t"); got != 7 {
		t.Errorf("copy of the template has v = %d, want 7", got)
	}
	if err := srv.DropDatabase(ctx, dbURL); err != nil {
		t.Fatal(err)
	}

	dir := srv.cluster.dir
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %s still there after Stop (stat: %v)", dir, err)
	}
}
