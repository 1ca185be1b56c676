package db

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Waking workers after a submit
//
// A worker's River producer fetches when it hears River's insert
// notification for its queue (channel "<schema>.river_insert", payload
// {"queue": …}), at its poll interval, or when a slot frees while it is
// saturated. River's inserting client sends that notification from inside
// the inserting transaction, at most once per queue per its FetchCooldown;
// kern's batched submits (submitBatch) use a River client whose cooldown is
// an hour, so River sends almost none, and send it themselves through the
// insertNotifier, for two reasons:
//
//   - After the commit, in a transaction of its own with synchronous_commit
//     off. A transaction that notifies holds Postgres's cluster-wide notify
//     lock from its pre-commit until its commit record is flushed, so
//     notifying submit transactions commit one at a time, each waiting out
//     a WAL flush (fsync) under that lock. The notifier's transaction writes
//     only its commit record and does not wait for its flush: a lost
//     notification costs a poll, never a run, and one sent for a
//     transaction that committed cannot wake a worker too early.
//   - Coalesced under load. A notification makes every listening producer
//     of the queue fetch, so one per submit commit keeps fetches small (a
//     few jobs each) at high rates, and the claims and final writes of
//     those few runs go out in small batches: about a third of kern's cost
//     per run at 1,000+ runs/s (BENCHMARKS.md). Below coalesceFromRate runs
//     per second for a queue, every commit notifies at once (a run reaches
//     an idle worker in a millisecond or two); above it, at most one
//     notification per queue per coalesce interval goes out, rising to
//     coalesceMax at coalesceFullRate, and a commit that finds one sent
//     within the interval is owed one at its end. So every committed submit
//     is followed, within the interval, by a notification sent after its
//     commit: no run waits for a poll.
//
// A submit inside the caller's transaction (SubmitParams.Tx) cannot be
// followed after its commit, so it keeps River's own notification, which
// Postgres delivers at that commit; so do re-enqueues (retries, rescues,
// answers), which are rare.
const (
	coalesceFromRate = 200.0 // runs per second of one queue, from one process
	coalesceFullRate = 600.0
	coalesceMax      = 20 * time.Millisecond
	// rateTau is how fast a queue's submit rate estimate forgets (the
	// time constant of its exponential decay).
	rateTau = 100 * time.Millisecond
	// notifyTimeout bounds one notification statement.
	notifyTimeout = 5 * time.Second
	// queueForgetAfter drops the state of a queue nobody submitted to.
	queueForgetAfter = time.Minute
)

// sqlNotifyInsert is River's insert notification for each queue, in a
// transaction that does not wait for its commit's WAL flush (set_config's
// third argument: for this transaction only).
const sqlNotifyInsert = `
SELECT set_config('synchronous_commit', 'off', true),
       pg_notify(current_schema() || '.river_insert', json_build_object('queue', q)::text)
FROM unnest($1::text[]) AS q`

// coalesceInterval is how long, at a queue's submit rate, a notification
// may wait for others to share it.
func coalesceInterval(rate float64) time.Duration {
	switch {
	case rate <= coalesceFromRate:
		return 0
	case rate >= coalesceFullRate:
		return coalesceMax
	}
	return time.Duration(float64(coalesceMax) * (rate - coalesceFromRate) / (coalesceFullRate - coalesceFromRate))
}

type insertNotifier struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu      sync.Mutex
	queues  map[string]*queueWake
	running bool
	closed  bool
	wake    chan struct{} // buffered: a submit owes a notification now
	ctx     context.Context
	stop    context.CancelFunc
	done    chan struct{}
	// sent counts notification statements (tests).
	sent int
}

// queueWake is one queue's state.
type queueWake struct {
	rate   float64 // runs per second submitted from this process, decaying
	rateAt time.Time
	sentAt time.Time // last notification sent
	due    time.Time // when the owed notification goes out; zero: none owed
}

func newInsertNotifier(pool *pgxpool.Pool, logger *slog.Logger) *insertNotifier {
	ctx, stop := context.WithCancel(context.Background())
	return &insertNotifier{
		pool:   pool,
		logger: logger,
		queues: make(map[string]*queueWake),
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		stop:   stop,
		done:   make(chan struct{}),
	}
}

// submitted records that runs of queue committed just now and owes the
// queue's workers a notification: at once, or at the end of the queue's
// coalesce interval.
func (n *insertNotifier) submitted(queue string, runs int) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.owe(queue, runs, time.Now())
	if !n.running {
		n.running = true
		go n.loop()
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// owe updates queue's rate with runs committed at now and sets when its
// notification falls due. Called with mu held.
func (n *insertNotifier) owe(queue string, runs int, now time.Time) {
	w := n.queues[queue]
	if w == nil {
		w = &queueWake{rateAt: now}
		n.queues[queue] = w
	}
	w.rate = w.rate*math.Exp(-float64(now.Sub(w.rateAt))/float64(rateTau)) + float64(runs)/rateTau.Seconds()
	w.rateAt = now
	due := now
	if next := w.sentAt.Add(coalesceInterval(w.rate)); next.After(now) {
		due = next
	}
	if w.due.IsZero() || due.Before(w.due) {
		w.due = due
	}
}

// loop sends owed notifications as they fall due, until close.
func (n *insertNotifier) loop() {
	defer close(n.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		queues, next := n.takeDue(time.Now())
		if len(queues) > 0 {
			n.send(queues)
			continue // more may have fallen due meanwhile
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		timer.Reset(wait)
		select {
		case <-n.ctx.Done():
			return
		case <-n.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// takeDue removes the notifications due by now and returns their queues,
// and when the next owed one falls due (zero: none owed).
func (n *insertNotifier) takeDue(now time.Time) (queues []string, next time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.takeDueLocked(now)
}

func (n *insertNotifier) takeDueLocked(now time.Time) (queues []string, next time.Time) {
	for q, w := range n.queues {
		switch {
		case w.due.IsZero():
			if now.Sub(w.rateAt) > queueForgetAfter {
				delete(n.queues, q)
			}
		case !w.due.After(now):
			queues = append(queues, q)
			w.sentAt, w.due = now, time.Time{}
		case next.IsZero() || w.due.Before(next):
			next = w.due
		}
	}
	return queues, next
}

func (n *insertNotifier) send(queues []string) {
	ctx, cancel := context.WithTimeout(n.ctx, notifyTimeout)
	defer cancel()
	_, err := n.pool.Exec(ctx, sqlNotifyInsert, queues)
	n.mu.Lock()
	n.sent++
	n.mu.Unlock()
	if err != nil {
		// Workers find the runs at their next poll instead.
		n.logger.Debug(fmt.Sprintf("kern: notify workers of new runs: %v", err), slog.Any("queues", queues))
	}
}

// close stops the loop and waits for it; later submits notify nobody.
func (n *insertNotifier) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	running := n.running
	n.mu.Unlock()
	n.stop()
	if running {
		<-n.done
	}
}
