package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

// Opening the worker's own Postgres session (its liveness, see maintain)
// is one connection and one statement; on a loaded machine, or when a
// packet is lost, that connection can take longer than any deadline one
// would set for it — or hang. Start must not fail (nor hang until its ctx
// ends) for that: each attempt has a deadline of its own, and a failed
// attempt is tried again, with a backoff, with a deadline twice as long.
const (
	// sessionAttemptTimeout bounds the first attempt; later ones double it
	// up to sessionAttemptMax.
	sessionAttemptTimeout = 5 * time.Second
	sessionAttemptMax     = time.Minute
	// sessionAttempts bounds the attempts when Start's ctx has no deadline
	// (about three minutes of deadlines): a session that cannot open in
	// all of them is an error, not a Start that never returns.
	sessionAttempts = 6
	// sessionBackoff is the pause after a first failed attempt, doubled
	// after each further one up to sessionBackoffMax.
	sessionBackoff    = 100 * time.Millisecond
	sessionBackoffMax = 5 * time.Second
)

// startSession opens the worker's session for Start, retrying within ctx
// (see sessionAttemptTimeout).
func (w *Worker) startSession(ctx context.Context) (engine.Session, error) {
	attempt := cmp.Or(w.sessionAttempt, sessionAttemptTimeout)
	backoff := sessionBackoff
	for i := 1; ; i++ {
		s, err := w.openSessionOnce(ctx, attempt)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil || i == sessionAttempts {
			return nil, err
		}
		w.cfg.Logger.WarnContext(ctx, "kern: opening the worker's Postgres session failed; trying again",
			slog.Int("attempt", i), slog.Duration("backoff", backoff), slog.Any("error", err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (after %d attempts: %w)", ctx.Err(), i, err)
		case <-t.C:
		}
		attempt, backoff = min(2*attempt, sessionAttemptMax), min(2*backoff, sessionBackoffMax)
	}
}

// openSessionOnce is one attempt, bounded by timeout as well as ctx.
func (w *Worker) openSessionOnce(ctx context.Context, timeout time.Duration) (engine.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return w.store.OpenSession(ctx, w.id)
}
