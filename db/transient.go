package db

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATEs that mean Postgres (or the way to it) is briefly away. They are
// spelled out rather than taken from github.com/jackc/pgerrcode, which this
// module does not require directly; the names in the comments are
// pgerrcode's.
const (
	// Class 08, connection exception, all of it (pgerrcode
	// IsConnectionException): the connection failed or could not be made.
	// This includes 08P01 protocol_violation on purpose: pgx does not send
	// malformed messages, while PgBouncer reports its own away-conditions
	// (server down, login failing, pool full, query_wait_timeout) as 08P01.
	sqlstateClassConnectionException = "08"

	sqlstateAdminShutdown      = "57P01" // AdminShutdown: a restart, a failover, pg_terminate_backend
	sqlstateCrashShutdown      = "57P02" // CrashShutdown: another backend crashed and the server resets
	sqlstateCannotConnectNow   = "57P03" // CannotConnectNow: starting up, shutting down, in recovery
	sqlstateIdleSessionTimeout = "57P05" // IdleSessionTimeout: the server dropped an idle connection; the statement never ran
	sqlstateTooManyConnections = "53300" // TooManyConnections: every slot taken; they free up as others disconnect
)

// transient reports whether err is Postgres being briefly away — a restart,
// a failover, a dropped connection — rather than a mistake that retrying
// cannot fix. Waiters ride out the former until their context ends; the
// batcher does not retry a batch's items one by one for it, since each would
// only fail the same way.
//
// It goes by error types, sentinels and SQLSTATEs, never by message text.
func transient(err error) bool {
	// First, because an ended context is the caller's doing, not Postgres's,
	// and because pgx wraps it in errors that claim SafeToRetry.
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// An answer from the server decides by its code, even inside a
	// ConnectError: a failed password (28P01) or a missing database (3D000)
	// is not Postgres being away.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return awayCode(pgErr.Code)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || // could not reach or start a session
		errors.As(err, &netErr) || // refused, reset, unreachable, DNS, a network timeout
		errors.Is(err, net.ErrClosed) ||
		// pgx reports a connection the server closed under a query as
		// io.ErrUnexpectedEOF (pgproto3 turns io.EOF into it). A bare io.EOF
		// is not taken: pgx does not return one for a dropped connection,
		// and elsewhere it often just means the end of some input.
		errors.Is(err, io.ErrUnexpectedEOF) ||
		// A connection pgx had already closed (after an earlier failure).
		errors.Is(err, pgconn.ErrConnClosed) ||
		// pgx's own word that nothing reached the server, as for a write
		// that failed before sending a byte.
		pgconn.SafeToRetry(err)
}

// awayCode reports whether a SQLSTATE is one of Postgres being away.
//
// Deliberately not, though in class 57 with the ones above: 57014
// QueryCanceled (statement_timeout or a cancel request: the server is there
// and the statement will likely time out again, so waiters must not retry it
// forever, and a batch that hit it must be retried item by item); 57P04
// DatabaseDropped (it will not come back); 57000 OperatorIntervention (no
// specific meaning to rely on).
func awayCode(code string) bool {
	if len(code) == 5 && code[:2] == sqlstateClassConnectionException {
		return true
	}
	switch code {
	case sqlstateAdminShutdown, sqlstateCrashShutdown, sqlstateCannotConnectNow,
		sqlstateIdleSessionTimeout, sqlstateTooManyConnections:
		return true
	}
	return false
}

// pause waits out a transient error: false when ctx ended first.
func pause(ctx context.Context, attempt int) bool {
	d := min(50*time.Millisecond<<min(attempt, 5), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
