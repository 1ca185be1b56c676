package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// keySeq numbers template keys. Templates live on the shared server for the
// whole process by design (later tests, and later -count iterations, only
// pay for a copy), and a failed build is remembered too. A test that asserts
// its migrate func runs, or compares against an error it created, must
// therefore use a key that no earlier test or iteration has built.
var keySeq atomic.Int64

// freshKey returns base plus a number unique within this process.
func freshKey(base string) string {
	return fmt.Sprintf("%s_%d", base, keySeq.Add(1))
}

// exists reports whether database name is in pg_database on the shared server.
func exists(t *testing.T, name string) bool {
	t.Helper()
	srv := sharedServer(t)
	names, err := srv.databaseNames(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func query[T any](t testing.TB, dbURL, sql string) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func execSQL(t testing.TB, dbURL, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestNewDatabase(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	seen := map[string]bool{}
	t.Run("parallel", func(t *testing.T) {
		for i := range n {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				dbURL := NewDatabase(t)
				tables := query[int](t, dbURL, "SELECT count(*)::int FROM pg_tables WHERE schemaname = 'public'")
				if tables != 0 {
					t.Errorf("fresh database has %d tables", tables)
				}
				// A table here must not show up in any sibling's database.
				execSQL(t, dbURL, "CREATE TABLE mine (id int)")
				name := query[string](t, dbURL, "SELECT current_database()")
				mu.Lock()
				defer mu.Unlock()
				if seen[name] {
					t.Errorf("database %s handed out twice", name)
				}
				seen[name] = true
			})
		}
	})
	if len(seen) != n {
		t.Fatalf("got %d distinct databases, want %d", len(seen), n)
	}
	for name := range seen {
		if exists(t, name) {
			t.Errorf("database %s still exists after cleanup", name)
		}
	}
}

func TestNewMigratedDatabase(t *testing.T) {
	// Subtests are named by base so their names stay the same across
	// -count iterations; the keys differ so every iteration builds anew.
	keys := map[string]string{"mig_a": freshKey("mig_a"), "mig_b": freshKey("mig_b")}
	runs := map[string]*atomic.Int32{keys["mig_a"]: {}, keys["mig_b"]: {}}
	migrate := func(key string) func(ctx context.Context, url string) error {
		return func(ctx context.Context, url string) error {
			runs[key].Add(1)
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, `
				CREATE TABLE runs (id bigserial PRIMARY KEY, key text NOT NULL, payload jsonb);
				CREATE INDEX ON runs (key);
				INSERT INTO runs (key) VALUES ('`+key+`');`)
			return err
		}
	}

	const perKey = 6
	var mu sync.Mutex
	seen := map[string]bool{}
	var total time.Duration
	t.Run("parallel", func(t *testing.T) {
		for base, key := range keys {
			for i := range perKey {
				t.Run(fmt.Sprintf("%s/%d", base, i), func(t *testing.T) {
					t.Parallel()
					start := time.Now()
					dbURL := NewMigratedDatabase(t, key, migrate(key))
					took := time.Since(start)
					got := query[string](t, dbURL, "SELECT string_agg(key, ',') FROM runs")
					if got != key {
						t.Errorf("seed rows = %q, want %q", got, key)
					}
					// Writes must stay in this copy.
					execSQL(t, dbURL, "INSERT INTO runs (key) VALUES ('extra')")
					name := query[string](t, dbURL, "SELECT current_database()")
					mu.Lock()
					defer mu.Unlock()
					total += took
					if seen[name] {
						t.Errorf("database %s handed out twice", name)
					}
					seen[name] = true
				})
			}
		}
	})
	for key, n := range runs {
		if got := n.Load(); got != 1 {
			t.Errorf("migrate for %s ran %d times, want 1", key, got)
		}
	}
	if len(seen) != 2*perKey {
		t.Fatalf("got %d distinct databases, want %d", len(seen), 2*perKey)
	}
	for name := range seen {
		if exists(t, name) {
			t.Errorf("database %s still exists after cleanup", name)
		}
	}
	t.Logf("NewMigratedDatabase: %.1f ms per test on average (including the two migrations)",
		float64(total.Microseconds())/1000/float64(2*perKey))

	// After the templates exist, a copy is what every later test pays.
	const warm = 10
	start := time.Now()
	for range warm {
		t.Run("warm", func(t *testing.T) { NewMigratedDatabase(t, keys["mig_a"], migrate(keys["mig_a"])) })
	}
	t.Logf("NewMigratedDatabase: %.1f ms per test with a warm template (create + drop)",
		float64(time.Since(start).Microseconds())/1000/warm)
}

func TestMigrateErrorIsSharedAndCleanedUp(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	var runs atomic.Int32
	var tmplURL string
	boom := errors.New("boom")
	migrate := func(ctx context.Context, url string) error {
		runs.Add(1)
		tmplURL = url
		return boom
	}
	key := freshKey("failing")
	for range 2 {
		if _, err := srv.migratedDatabase(ctx, "kern_test", key, migrate); !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
	}
	if runs.Load() != 1 {
		t.Errorf("migrate ran %d times, want 1", runs.Load())
	}
	name, err := databaseName(tmplURL)
	if err != nil {
		t.Fatal(err)
	}
	if exists(t, name) {
		t.Errorf("failed template %s was not dropped", name)
	}
}

func TestCreateDropDatabase(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	dbURL, err := srv.CreateDatabase(ctx, "kern_demo")
	if err != nil {
		t.Fatal(err)
	}
	name := query[string](t, dbURL, "SELECT current_database()")
	if !exists(t, name) {
		t.Fatalf("database %s missing", name)
	}
	// An open connection must not block the drop.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := srv.DropDatabase(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	if exists(t, name) {
		t.Fatalf("database %s still exists", name)
	}
	if err := srv.DropDatabase(ctx, dbURL); err != nil {
		t.Fatalf("dropping twice: %v", err)
	}
	if err := srv.DropDatabase(ctx, srv.AdminURL); err == nil {
		t.Fatal("dropping the admin database was allowed")
	}
}

func TestDropStale(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	old := time.Now().Add(-3 * time.Hour).Unix()
	// Random suffixes, not fixed ones: a repeat in the same second (-count)
	// or another process on the same DATABASE_URL server must not collide
	// with these names.
	stale := fmt.Sprintf("kern_test_%d_%08x", old, rand.Uint32())
	staleTmpl := fmt.Sprintf("kern_tmpl_kern_1234_%d_%08x", old, rand.Uint32())
	fresh := fmt.Sprintf("kern_test_%d_%08x", time.Now().Unix(), rand.Uint32())
	other := fmt.Sprintf("someone_else_%d_%08x", old, rand.Uint32())
	for _, name := range []string{stale, staleTmpl, fresh, other} {
		if err := srv.exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// IF EXISTS makes an already dropped name fine; any other
			// failure would leave a name behind, so report it.
			if err := srv.dropByName(context.Background(), name); err != nil {
				t.Error(err)
			}
		})
	}
	if err := srv.dropStale(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{stale: false, staleTmpl: false, fresh: true, other: true} {
		if got := exists(t, name); got != want {
			t.Errorf("after dropStale, %s exists = %v, want %v", name, got, want)
		}
	}
}

func TestDockerDetectionIsFast(t *testing.T) {
	for _, host := range []string{"", "unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"} {
		t.Run(host, func(t *testing.T) {
			if host != "" {
				t.Setenv("DOCKER_HOST", host)
			}
			start := time.Now()
			err := dockerEngine(context.Background())
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("detection took %v (err %v)", took, err)
			}
			if host != "" && err == nil {
				t.Errorf("DOCKER_HOST=%s reported as answering", host)
			}
		})
	}
	t.Setenv("KERN_TEST_NO_DOCKER", "1")
	if err := dockerEngine(context.Background()); err == nil {
		t.Error("KERN_TEST_NO_DOCKER=1 did not skip docker")
	}
}

func TestDatabaseURL(t *testing.T) {
	for _, tc := range []struct{ admin, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/x_1?sslmode=disable"},
		{"postgresql://h/postgres", "postgresql://h/x_1"},
		{"postgres://h", "postgres://h/x_1"},
		{"postgres://h/postgres?dbname=postgres&sslmode=disable", "postgres://h/x_1?sslmode=disable"},
		{"host=h port=5432 dbname=postgres sslmode=disable", "host=h port=5432 sslmode=disable dbname='x_1'"},
		{"host=h password='a b\\'c' dbname = 'post gres'", "host=h password='a b\\'c' dbname='x_1'"},
		{"host=h", "host=h dbname='x_1'"},
	} {
		got, err := databaseURL(tc.admin, "x_1")
		if err != nil {
			t.Errorf("%s: %v", tc.admin, err)
			continue
		}
		if got != tc.want {
			t.Errorf("databaseURL(%q) = %q, want %q", tc.admin, got, tc.want)
		}
		if name, err := databaseName(got); err != nil || name != "x_1" {
			t.Errorf("databaseName(%q) = %q, %v", got, name, err)
		}
	}
}

func TestNames(t *testing.T) {
	if sec, ok := createdAt("kern_tmpl_my_key_4242_1700000000_0a0b0c0d"); !ok || sec != 1700000000 {
		t.Errorf("createdAt = %d, %v", sec, ok)
	}
	if _, ok := createdAt("kern_test_x"); ok {
		t.Error("createdAt accepted a name without a time")
	}
	for key, want := range map[string]string{"kern": "kern", "Kern-V2!": "kern_v2", "": "x", "a_very_long_key_that_goes_on": "a_very_long_key_that"} {
		if got := keyPart(key); got != want {
			t.Errorf("keyPart(%q) = %q, want %q", key, got, want)
		}
	}
}
