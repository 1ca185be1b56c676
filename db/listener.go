package db

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Notification channels. Payloads carry a run id only; readers read rows.
const (
	channelRunDone = "kern_run_done" // a run reached a terminal status
	channelCancel  = "kern_cancel"   // a cancel request was recorded
)

// ListenerApplicationName names the listener's connection in
// pg_stat_activity, so operators (and tests) can tell it apart.
const ListenerApplicationName = "kern_listener"

// recheckInterval bounds how long a lost notification can delay a waiter:
// while anyone is subscribed, the listener re-reads the watched runs this
// often. It is also the listener's reconnect pace.
const recheckInterval = time.Second

// listener is the one LISTEN connection of a DB. It fans notifications out
// to every subscriber (WaitRun callers, executing runs watching for a cancel)
// so a thousand waiters cost one connection, not a thousand.
type listener struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu      sync.Mutex
	subs    map[topic]map[*Subscription]struct{}
	running bool
	closed  bool
	stop    context.CancelFunc
	done    chan struct{}
}

type topic struct {
	channel string
	runID   string
}

// Subscription is a wake-up signal for one run. C receives (coalesced) when
// the event it was made for may have happened; the receiver re-reads the row.
type Subscription struct {
	c        chan struct{}
	topic    topic
	listener *listener
}

// C is signalled when the subscribed event may have happened.
func (s *Subscription) C() <-chan struct{} { return s.c }

// Close unsubscribes. It is safe to call more than once.
func (s *Subscription) Close() { s.listener.unsubscribe(s) }

func (s *Subscription) signal() {
	select {
	case s.c <- struct{}{}:
	default: // already signalled; the receiver re-reads anyway
	}
}

func newListener(pool *pgxpool.Pool, logger *slog.Logger) *listener {
	return &listener{pool: pool, logger: logger, subs: make(map[topic]map[*Subscription]struct{})}
}

// SubscribeDone signals when the run may have reached a terminal status.
// Subscribe before reading the run, so no transition can slip between.
func (d *DB) SubscribeDone(runID string) *Subscription {
	return d.listener.subscribe(topic{channelRunDone, runID})
}

// SubscribeCancel signals when a cancel request for the run may have been
// recorded. The executing worker uses it to interrupt the model at once.
func (d *DB) SubscribeCancel(runID string) *Subscription {
	return d.listener.subscribe(topic{channelCancel, runID})
}

func (l *listener) subscribe(t topic) *Subscription {
	s := &Subscription{c: make(chan struct{}, 1), topic: t, listener: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		s.signal() // the DB is closed: let the waiter find out by reading
		return s
	}
	set := l.subs[t]
	if set == nil {
		set = make(map[*Subscription]struct{})
		l.subs[t] = set
	}
	set[s] = struct{}{}
	if !l.running {
		ctx, cancel := context.WithCancel(context.Background())
		l.running, l.stop, l.done = true, cancel, make(chan struct{})
		go l.run(ctx, l.done)
	}
	return s
}

func (l *listener) unsubscribe(s *Subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if set := l.subs[s.topic]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(l.subs, s.topic)
		}
	}
}

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	stop, done, running := l.stop, l.done, l.running
	for _, set := range l.subs {
		for s := range set {
			s.signal()
		}
	}
	l.mu.Unlock()
	if running {
		stop()
		<-done
	}
}

// notify wakes the subscribers of one topic.
func (l *listener) notify(t topic) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[t] {
		s.signal()
	}
}

// watched lists the run ids with subscribers, per channel.
func (l *listener) watched() (done, cancel []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t := range l.subs {
		switch t.channel {
		case channelRunDone:
			done = append(done, t.runID)
		case channelCancel:
			cancel = append(cancel, t.runID)
		}
	}
	return done, cancel
}

// run keeps a LISTEN connection up until ctx ends, reconnecting after any
// failure; after every (re)connect it re-checks, since notifications sent
// while it was down are gone.
func (l *listener) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.logger.WarnContext(ctx, "kern: listener connection lost; reconnecting", slog.Any("error", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(recheckInterval / 4):
		}
	}
}

func (l *listener) listen(ctx context.Context) error {
	cfg := l.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	// Interrupt a wait by deadline only: a cancel request sent to an idle
	// backend could hit the next statement on this connection instead.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{channelRunDone, channelCancel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	for {
		if err := l.recheck(ctx, conn); err != nil {
			return err
		}
		waitUntil := time.Now().Add(recheckInterval)
		for time.Now().Before(waitUntil) {
			waitCtx, cancel := context.WithDeadline(ctx, waitUntil)
			n, err := conn.WaitForNotification(waitCtx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
					break
				}
				return err
			}
			l.notify(topic{n.Channel, n.Payload})
		}
	}
}

// recheck wakes subscribers whose event happened without a notification
// reaching us (a dropped connection, a notification sent before LISTEN).
func (l *listener) recheck(ctx context.Context, conn *pgx.Conn) error {
	doneIDs, cancelIDs := l.watched()
	if len(doneIDs) == 0 && len(cancelIDs) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, sqlRecheck, doneIDs, cancelIDs)
	if err != nil {
		return err
	}
	var hits []topic
	for rows.Next() {
		var kind, id string
		if err := rows.Scan(&kind, &id); err != nil {
			rows.Close()
			return err
		}
		if kind == "done" {
			hits = append(hits, topic{channelRunDone, id})
		} else {
			hits = append(hits, topic{channelCancel, id})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range hits {
		l.notify(t)
	}
	return nil
}
