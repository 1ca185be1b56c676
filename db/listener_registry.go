package db

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// registration is a listener's row in kern_event_listener, on its own
// LISTEN connection. Appending events notifies only while some listener is
// registered (migrations/006_listeners.sql), so a cluster where nobody
// waits or follows sends no event notifications at all.
//
// Order keeps the guarantee: the listener LISTENs first and registers
// second, so a writer that sees the row notifies a connection that already
// listens. A writer whose statement started before the row was visible
// sends nothing; the listener re-checks its runs right after registering
// and once more registeredRecheck later, and every recheckInterval after
// that, as it does for any lost notification.
type registration struct {
	until time.Time // zero: not registered
}

func newListenerID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// sync registers, renews or drops the row so it matches want. registered
// reports a new registration (not a renewal).
func (r *registration) sync(ctx context.Context, conn *pgx.Conn, id string, want bool) (registered bool, err error) {
	switch {
	case want && r.until.IsZero():
		if _, err := conn.Exec(ctx, sqlRegisterListener, id, listenerTTL.Seconds()); err != nil {
			return false, err
		}
		r.until = time.Now().Add(listenerTTL)
		return true, nil
	case want && time.Until(r.until) < listenerTTL*2/3:
		// The same upsert: a row that expired while this process stalled
		// may have been cleared by another listener.
		if _, err := conn.Exec(ctx, sqlRegisterListener, id, listenerTTL.Seconds()); err != nil {
			return false, err
		}
		r.until = time.Now().Add(listenerTTL)
	case !want && !r.until.IsZero():
		if _, err := conn.Exec(ctx, sqlUnregisterListener, id); err != nil {
			return false, err
		}
		r.until = time.Time{}
	}
	return false, nil
}

// drop removes the row when the listener stops or its connection is lost,
// through the pool: the LISTEN connection is closed by then whenever a
// cancelled wait ended it. Best effort: a row left behind expires by itself.
func (r *registration) drop(ctx context.Context, pool *pgxpool.Pool, id string) {
	if r.until.IsZero() {
		return
	}
	dropCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = pool.Exec(dropCtx, sqlUnregisterListener, id)
	r.until = time.Time{}
}
