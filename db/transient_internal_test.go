package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

func TestTransient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{run.ErrNotFound, false},
		{fmt.Errorf("kern: get run: %w", run.ErrInvalidArgument), false},
		{context.Canceled, false},
		{fmt.Errorf("timeout: %w", context.DeadlineExceeded), false},

		// Postgres away, by SQLSTATE.
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, true},
		{&pgconn.PgError{Code: "57P02", Message: "terminating connection because of crash of another server process"}, true},
		{fmt.Errorf("kern: get run: %w", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}), true},
		{&pgconn.PgError{Code: "57P05", Message: "terminating connection due to idle-session timeout"}, true},
		{&pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{&pgconn.PgError{Code: "08001"}, true},
		{&pgconn.PgError{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}, true},

		// Postgres there, though the class is 57.
		{&pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, false},
		{fmt.Errorf("kern: events: %w", &pgconn.PgError{Code: "57014", Message: "canceling statement due to user request"}), false},
		{&pgconn.PgError{Code: "57P04", Message: "database dropped"}, false},
		{&pgconn.PgError{Code: "57000"}, false},
		// Mistakes.
		{&pgconn.PgError{Code: "42P01", Message: `relation "kern_run" does not exist`}, false},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "40P01"}, false},
		{&pgconn.PgError{Code: "28P01"}, false},
		{&pgconn.PgError{Code: ""}, false},

		// The connection gone, by type and sentinel.
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{fmt.Errorf("kern: get run: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		{fmt.Errorf("kern: get run: %w", net.ErrClosed), true},
		{fmt.Errorf("kern: get run: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("kern: get run: %w", pgconn.ErrConnClosed), true},
		// Not a dropped connection: pgx reports that as io.ErrUnexpectedEOF.
		{fmt.Errorf("decode: %w", io.EOF), false},
		// No longer matched by its text: only pgx's sentinel counts.
		{fmt.Errorf("kern: get run: %w", errors.New("conn closed")), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestTransientErrorsFromPostgres classifies errors as pgx really returns
// them, from a real server and real sockets.
func TestTransientErrorsFromPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("statement timeout", func(t *testing.T) {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		if _, err := c.Exec(ctx, "SET statement_timeout = '1ms'"); err != nil {
			t.Fatal(err)
		}
		_, err = c.Exec(ctx, "SELECT pg_sleep(1)")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("err = %v, want SQLSTATE 57014", err)
		}
		if transient(err) {
			t.Fatalf("transient(%v) = true: a statement timeout is not Postgres away", err)
		}
	})

	t.Run("terminated backend", func(t *testing.T) {
		victim, err := pgconn.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close(context.Background())
		admin, err := pgconn.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		// The timeout makes pg_terminate_backend wait until the backend is
		// gone, so the victim's next statement cannot slip in first.
		q := fmt.Sprintf("SELECT pg_terminate_backend(%d, 10000)", victim.PID())
		if _, err := admin.Exec(ctx, q).ReadAll(); err != nil {
			t.Fatal(err)
		}
		// Typically the server's FATAL 57P01; a write to the closed socket
		// would fail as a net error instead. Both are Postgres away.
		_, err = victim.Exec(ctx, "SELECT 1").ReadAll()
		t.Logf("on a terminated connection: %v", err)
		if err == nil || !transient(err) {
			t.Fatalf("on a terminated connection: transient(%v) = false", err)
		}
		// pgx has closed the connection now: its sentinel, not its text.
		_, err = victim.Exec(ctx, "SELECT 1").ReadAll()
		if !errors.Is(err, pgconn.ErrConnClosed) || !transient(err) {
			t.Fatalf("on a connection pgx closed: err = %v, transient = %v; want pgconn.ErrConnClosed, transient", err, transient(err))
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		c := cfg.Copy()
		c.Host, c.Port, c.Fallbacks = "127.0.0.1", uint16(addr.Port), nil
		c.ConnectTimeout = 10 * time.Second
		_, err = pgconn.ConnectConfig(ctx, c)
		var connectErr *pgconn.ConnectError
		if !errors.As(err, &connectErr) || !transient(err) {
			t.Fatalf("connecting to a closed port: err = %v, transient = %v; want a transient ConnectError", err, transient(err))
		}
	})

	t.Run("missing database", func(t *testing.T) {
		c := cfg.Copy()
		c.Database = "kern_no_such_database"
		_, err := pgconn.ConnectConfig(ctx, c)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
			t.Fatalf("err = %v, want SQLSTATE 3D000", err)
		}
		if transient(err) {
			t.Fatalf("transient(%v) = true: the server answered, and the database will not appear", err)
		}
	})

	t.Run("context already ended", func(t *testing.T) {
		conn, err := pgconn.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		ended, cancel := context.WithCancel(ctx)
		cancel()
		_, err = conn.Exec(ended, "SELECT 1").ReadAll()
		// pgx says this is safe to retry, and so it is, but it is the
		// caller giving up, not Postgres away.
		if !pgconn.SafeToRetry(err) || transient(err) {
			t.Fatalf("err = %v: SafeToRetry %v, transient %v; want true, false", err, pgconn.SafeToRetry(err), transient(err))
		}
	})
}
