package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
)

// ForWorker implements engine.Store: claims made through it record the
// worker on the run (kern_run.worker_id).
func (d engineDB) ForWorker(id string) engine.Store {
	d.worker = id
	return d
}

// session is a worker's own connection (engine.Session), outside the pool:
// the pool's connections come and go, this one lives as long as the worker.
// It holds the worker's liveness lock (lock): peers judge the worker alive
// while the lock is held (deadWorkers).
type session struct {
	conn *pgx.Conn
	lock int32
}

// Check makes sure the session still holds its liveness lock: a
// connection that broke, or that a pooler moved to another backend,
// fails. Its own deadline, not the caller's context: a pgx.Conn closes
// itself when a query's context ends mid-flight, and a worker stopping its
// maintenance must not end its session (and look dead) while its runs
// still finish.
func (s session) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var held bool
	if err := s.conn.QueryRow(ctx, sqlHoldsSessionLock, s.lock).Scan(&held); err != nil {
		return err
	}
	if !held {
		return errNotOwnSession
	}
	return nil
}

func (s session) Close(ctx context.Context) error { return s.conn.Close(ctx) }

// errNotOwnSession: the connection runs its statements on a backend that
// does not hold its liveness lock.
var errNotOwnSession = errors.New("the connection is not a session of its own " +
	"(a transaction pooler between the worker and Postgres?): set a direct URL (db.WithDirectURL)")

// heartbeatOnly is the session of a worker that has no session of its own
// to be judged by — behind a transaction pooler without a direct URL: it
// records nothing, and peers judge the worker by its runs' heartbeats
// (RescueAfter).
type heartbeatOnly struct{}

func (heartbeatOnly) Check(context.Context) error { return nil }
func (heartbeatOnly) Close(context.Context) error { return nil }

// OpenSession implements engine.Store. It connects on the direct URL when
// there is one (WithDirectURL), otherwise with the pool's own settings
// (and kern's schema, WithSchema), takes a liveness lock there, makes sure
// that the connection is a session of its own (not a transaction pooler's:
// see sessionIsOwn), and records the session's lock, backend pid and
// start, and the start of the server instance, on worker id's registration.
// Behind a transaction pooler without a direct URL it records nothing: the
// worker is then judged by its heartbeats.
func (d engineDB) OpenSession(ctx context.Context, id string) (engine.Session, error) {
	// A session of its own is where LISTEN works: Postgres itself, a
	// session pooler, or the direct URL.
	if !d.ListensForNotifications() {
		var ok bool
		if err := d.pool.QueryRow(ctx, sqlWorkerRegistered, id).Scan(&ok); err != nil {
			return nil, fmt.Errorf("kern: worker session: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("kern: worker session: worker %q is not registered", id)
		}
		d.logger().WarnContext(ctx, "kern: behind a transaction pooler without a direct URL: "+
			"a dead worker's runs are rescued after RescueAfter (heartbeats), not within a second; set db.WithDirectURL (KERN_DIRECT_DATABASE_URL)",
			slog.String("worker", id))
		return heartbeatOnly{}, nil
	}
	cfg := d.sessionConfig()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("kern: worker session: %w", err)
	}
	s, err := d.recordSession(ctx, conn, cfg, id)
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("kern: worker session: %w", err)
	}
	return s, nil
}

func (d engineDB) recordSession(ctx context.Context, conn *pgx.Conn, cfg *pgx.ConnConfig, id string) (session, error) {
	var lock int32
	for i := 0; ; i++ {
		err := conn.QueryRow(ctx, sqlTakeSessionLock).Scan(&lock)
		if err == nil {
			break
		}
		// No row: that number's lock is held (the sequence cycled onto a
		// live session's); take the next.
		if !errors.Is(err, pgx.ErrNoRows) || i == 10 {
			return session{}, err
		}
	}
	// Whatever the pool mode says: the direct URL, or a pool mode set by
	// hand, may be wrong, and a live worker judged by a pooler's backend
	// is rescued when the pooler recycles it.
	own, err := sessionIsOwn(ctx, conn, cfg)
	if err != nil {
		return session{}, err
	}
	if !own {
		return session{}, errNotOwnSession
	}
	tag, err := conn.Exec(ctx, sqlRecordSession, id, lock)
	if err != nil {
		return session{}, err
	}
	if tag.RowsAffected() == 0 {
		var registered bool
		if err := conn.QueryRow(ctx, sqlWorkerRegistered, id).Scan(&registered); err != nil {
			return session{}, err
		}
		if !registered {
			return session{}, fmt.Errorf("worker %q is not registered", id)
		}
		return session{}, errNotOwnSession
	}
	return session{conn: conn, lock: lock}, nil
}

// DeadSessionRuns implements engine.Store.
func (d engineDB) DeadSessionRuns(ctx context.Context) (bool, error) {
	var dead bool
	if err := d.pool.QueryRow(ctx, sqlDeadSessionRuns).Scan(&dead); err != nil {
		return false, fmt.Errorf("kern: worker sessions: %w", err)
	}
	return dead, nil
}
