package db

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Notification channels. Payloads carry a run id; readers read rows. In
// Postgres each is prefixed with the schema of kern's tables and a dot
// ("public.kern_cancel"), as River prefixes its own, so two kern installs
// in two schemas of one database never hear each other (the triggers name
// the channel after their table's schema: migrations/020_schema_channels.sql).
const (
	channelCancel = "kern_cancel" // a cancel request was recorded
	// channelEvent: a run has new events; with doneSuffix, one of them is
	// terminal (see migrations/002_events.sql).
	channelEvent = "kern_event"
	doneSuffix   = "\x1fdone"
)

// channelRunDone is a topic only: waiters for a terminal status are woken
// by the terminal event's notification.
const channelRunDone = "kern_run_done"

// pgChannel is the Postgres channel whose notifications serve a topic.
func (t topic) pgChannel() string {
	if t.channel == channelRunDone {
		return channelEvent
	}
	return t.channel
}

// ListenerApplicationName names the listener's connection in
// pg_stat_activity, so operators (and tests) can tell it apart.
const ListenerApplicationName = "kern_listener"

// recheckInterval bounds how long a lost notification can delay a waiter:
// while anyone is subscribed, the listener re-reads the watched runs this
// often. It is also the listener's reconnect pace.
const recheckInterval = time.Second

// listenerTTL is how long a listener's registration in kern_event_listener
// lives without renewal; a listener renews it well before (every third of
// it), so only a process that died leaves one behind, for at most this
// long. registeredRecheck is how soon after registering the listener
// re-checks once more: a statement that appended events before the
// registration was visible to it sent no notification, and the first
// re-check may have run before that statement committed.
const (
	listenerTTL       = 30 * time.Second
	registeredRecheck = 100 * time.Millisecond
)

// listener is the one LISTEN connection of a DB. It fans notifications out
// to every subscriber (WaitRun callers, executing runs watching for a cancel)
// so a thousand waiters cost one connection, not a thousand.
//
// It LISTENs only on the channels its subscribers need: a worker that only
// watches for cancels never receives the event notifications of every run
// on the cluster, so adding worker processes does not multiply what
// Postgres delivers per run.
type listener struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	// schema is WithSchema's: "" takes the connection's current_schema().
	schema string
	// connConfig makes the listener's connection's configuration: the
	// direct URL's when there is one (DB.sessionConfig); nil: the pool's.
	connConfig func() *pgx.ConnConfig
	// poll: the connection cannot LISTEN (a transaction pooler's, with no
	// direct URL): the listener re-reads the watched runs every pollEvery
	// instead (pollRuns).
	poll      bool
	pollEvery time.Duration
	// id is this listener's row in kern_event_listener while it LISTENs on
	// kern_event: the event trigger notifies only while such a row is live
	// (migrations/006_listeners.sql).
	id string
	// recheckEvery is recheckInterval but in tests; registeredRecheckAfter
	// is registeredRecheck but in tests.
	recheckEvery           time.Duration
	registeredRecheckAfter time.Duration

	mu      sync.Mutex
	subs    map[topic]map[*subscription]struct{}
	running bool
	closed  bool
	stop    context.CancelFunc
	done    chan struct{}
	// listening is what the current connection LISTENs on; interrupt, while
	// set, ends its wait for a notification, so a subscription that needs
	// another channel gets it at once.
	listening map[string]bool
	interrupt context.CancelFunc
	// topicsOn counts the subscribed topics each Postgres channel serves.
	topicsOn map[string]int

	// Test hooks, unused outside tests. dropNotifications makes the listener
	// throw away every notification it receives (counting them in dropped),
	// as if it had been lost; nextRecheckAt is when the next periodic
	// re-check is due.
	dropNotifications atomic.Bool
	dropped           atomic.Int64
	nextRecheckAt     atomic.Pointer[time.Time]
}

type topic struct {
	channel string
	runID   string
}

// subscription is a wake-up signal for one run. C receives (coalesced) when
// the event it was made for may have happened; the receiver re-reads the row.
type subscription struct {
	c        chan struct{}
	topic    topic
	listener *listener
	// position is the last event seq an event follower has read; the
	// re-check wakes it only when the run has events past it.
	position atomic.Int64
	// sleeps (a test hook) counts the calls of C: a waiter asks for it when,
	// having read the row, it goes to sleep.
	sleeps atomic.Int64
}

// C is signalled when the subscribed event may have happened.
func (s *subscription) C() <-chan struct{} {
	s.sleeps.Add(1)
	return s.c
}

// Close unsubscribes. It is safe to call more than once.
func (s *subscription) Close() { s.listener.unsubscribe(s) }

func (s *subscription) signal() {
	select {
	case s.c <- struct{}{}:
	default: // already signalled; the receiver re-reads anyway
	}
}

// subscribeEvents signals when the run may have events past the position
// the follower reports with SetPosition.
func (d *DB) subscribeEvents(runID string) *subscription {
	return d.listener.subscribe(topic{channelEvent, runID})
}

// SetPosition records the last event seq the follower has read.
func (s *subscription) SetPosition(seq int64) { s.position.Store(seq) }

func newListener(pool *pgxpool.Pool, logger *slog.Logger) *listener {
	return &listener{pool: pool, logger: logger, recheckEvery: recheckInterval, pollEvery: pollInterval, registeredRecheckAfter: registeredRecheck, id: newListenerID(),
		subs: make(map[topic]map[*subscription]struct{}), listening: map[string]bool{}, topicsOn: map[string]int{}}
}

// subscribeDone signals when the run may have reached a terminal status.
// Subscribe before reading the run, so no transition can slip between.
func (d *DB) subscribeDone(runID string) *subscription {
	return d.listener.subscribe(topic{channelRunDone, runID})
}

func (l *listener) subscribe(t topic) *subscription {
	s := &subscription{c: make(chan struct{}, 1), topic: t, listener: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		s.signal() // the DB is closed: let the waiter find out by reading
		return s
	}
	set := l.subs[t]
	if set == nil {
		set = make(map[*subscription]struct{})
		l.subs[t] = set
		l.topicsOn[t.pgChannel()]++
	}
	set[s] = struct{}{}
	if !l.running {
		ctx, cancel := context.WithCancel(context.Background())
		l.running, l.stop, l.done = true, cancel, make(chan struct{})
		go l.run(ctx, l.done)
	} else if !l.listening[t.pgChannel()] && l.interrupt != nil {
		l.interrupt()
	}
	return s
}

func (l *listener) unsubscribe(s *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if set := l.subs[s.topic]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(l.subs, s.topic)
			if l.topicsOn[s.topic.pgChannel()]--; l.topicsOn[s.topic.pgChannel()] == 0 {
				delete(l.topicsOn, s.topic.pgChannel())
			}
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

// dispatch wakes the subscribers a notification concerns.
func (l *listener) dispatch(channel, payload string) {
	if channel == channelEvent {
		if runID, done := strings.CutSuffix(payload, doneSuffix); done {
			l.notify(topic{channelRunDone, runID})
			payload = runID
		}
	}
	l.notify(topic{channel, payload})
}

// notify wakes the subscribers of one topic.
func (l *listener) notify(t topic) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[t] {
		s.signal()
	}
}

// watchList is what the re-check looks at: run ids per channel, and for
// event followers the lowest position read.
type watchList struct {
	done, cancel, event []string
	eventSeq            []int64
}

func (w *watchList) empty() bool {
	return len(w.done) == 0 && len(w.cancel) == 0 && len(w.event) == 0
}

func (l *listener) watched() watchList {
	l.mu.Lock()
	defer l.mu.Unlock()
	var w watchList
	for t, set := range l.subs {
		switch t.channel {
		case channelRunDone:
			w.done = append(w.done, t.runID)
		case channelCancel:
			w.cancel = append(w.cancel, t.runID)
		case channelEvent:
			lowest := int64(-1)
			for s := range set {
				if p := s.position.Load(); lowest < 0 || p < lowest {
					lowest = p
				}
			}
			w.event = append(w.event, t.runID)
			w.eventSeq = append(w.eventSeq, lowest)
		}
	}
	return w
}

// run keeps a LISTEN connection up until ctx ends, reconnecting after any
// failure; after every (re)connect and every new LISTEN it re-checks, since
// notifications sent before it listened are gone.
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
	if l.poll {
		return l.pollRuns(ctx)
	}
	conn, err := pgx.ConnectConfig(ctx, l.config())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return l.listenOn(ctx, conn)
}

// config is the listener's connection's configuration.
func (l *listener) config() *pgx.ConnConfig {
	var cfg *pgx.ConnConfig
	if l.connConfig != nil {
		cfg = l.connConfig()
	} else {
		cfg = l.pool.Config().ConnConfig.Copy()
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	withSearchPath(cfg, l.schema)
	// Interrupt a wait by deadline only: a cancel request sent to an idle
	// backend could hit the next statement on this connection instead.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	return cfg
}

// listenOn LISTENs on conn until it fails or ctx ends.
func (l *listener) listenOn(ctx context.Context, conn *pgx.Conn) error {
	prefix, err := l.channelPrefix(ctx, conn)
	if err != nil {
		return err
	}
	l.mu.Lock()
	clear(l.listening)
	l.mu.Unlock()
	var reg registration
	defer reg.drop(ctx, l.pool, l.id)
	var nextRecheck time.Time
	for {
		added, err := l.syncChannels(ctx, conn, prefix, !time.Now().Before(nextRecheck))
		if err != nil {
			return err
		}
		l.mu.Lock()
		wantEvents := l.listening[channelEvent]
		l.mu.Unlock()
		registered, err := reg.sync(ctx, conn, l.id, wantEvents)
		if err != nil {
			return err
		}
		if added || registered || !time.Now().Before(nextRecheck) {
			if err := l.recheck(ctx, conn); err != nil {
				return err
			}
			nextRecheck = time.Now().Add(l.recheckEvery)
			if registered {
				nextRecheck = time.Now().Add(l.registeredRecheckAfter)
			}
			at := nextRecheck
			l.nextRecheckAt.Store(&at)
		}
		waitCtx, cancel := context.WithDeadline(ctx, nextRecheck)
		l.mu.Lock()
		if l.missingChannelLocked() {
			l.mu.Unlock()
			cancel()
			continue
		}
		l.interrupt = cancel
		l.mu.Unlock()
		n, err := conn.WaitForNotification(waitCtx)
		l.mu.Lock()
		l.interrupt = nil
		l.mu.Unlock()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				continue
			}
			return err
		}
		if l.dropNotifications.Load() {
			l.dropped.Add(1)
			continue
		}
		if ch, ok := strings.CutPrefix(n.Channel, prefix); ok {
			l.dispatch(ch, n.Payload)
		}
	}
}

// channelPrefix is what the Postgres channels of this install begin with:
// kern's schema and a dot.
func (l *listener) channelPrefix(ctx context.Context, conn *pgx.Conn) (string, error) {
	schema := l.schema
	if schema == "" {
		if err := conn.QueryRow(ctx, "SELECT coalesce(current_schema(), '')").Scan(&schema); err != nil {
			return "", err
		}
		if schema == "" {
			return "", errors.New("no current schema: the search_path names no schema that exists")
		}
	}
	return schema + ".", nil
}

func (l *listener) missingChannelLocked() bool {
	for ch := range l.topicsOn {
		if !l.listening[ch] {
			return true
		}
	}
	return false
}

// syncChannels LISTENs on the channels subscribers need (their names in
// Postgres begin with prefix) and, with drop,
// UNLISTENs those nobody needs any more (only at re-check time, so waiters
// that come and go do not make it churn). added says a LISTEN was issued.
func (l *listener) syncChannels(ctx context.Context, conn *pgx.Conn, prefix string, drop bool) (added bool, err error) {
	l.mu.Lock()
	var listen, unlisten []string
	for ch := range l.topicsOn {
		if !l.listening[ch] {
			listen = append(listen, ch)
		}
	}
	for ch := range l.listening {
		if drop && l.topicsOn[ch] == 0 {
			unlisten = append(unlisten, ch)
		}
	}
	l.mu.Unlock()
	for _, ch := range listen {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{prefix + ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	for _, ch := range unlisten {
		if _, err := conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{prefix + ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	l.mu.Lock()
	for _, ch := range listen {
		l.listening[ch] = true
	}
	for _, ch := range unlisten {
		delete(l.listening, ch)
	}
	l.mu.Unlock()
	return len(listen) > 0, nil
}

// recheck wakes subscribers whose event happened without a notification
// reaching us (a dropped connection, a notification sent before LISTEN).
func (l *listener) recheck(ctx context.Context, conn *pgx.Conn) error {
	w := l.watched()
	if w.empty() {
		return nil
	}
	rows, err := conn.Query(ctx, sqlRecheck, w.done, w.cancel, w.event, w.eventSeq)
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
		switch kind {
		case "done":
			hits = append(hits, topic{channelRunDone, id})
		case "cancel":
			hits = append(hits, topic{channelCancel, id})
		case "event":
			hits = append(hits, topic{channelEvent, id})
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
