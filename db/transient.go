package db

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// transient reports whether err is Postgres being briefly away — a restart,
// a failover, a dropped connection — rather than a mistake that retrying
// cannot fix. Waiters ride out the former until their context ends.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"57": // operator intervention: admin shutdown, cannot connect now
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, net.ErrClosed) || connClosed(err)
}

// connClosed matches pgx's "conn closed" for a connection that died under a
// query; pgx exports no sentinel for it.
func connClosed(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "conn closed" {
			return true
		}
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
