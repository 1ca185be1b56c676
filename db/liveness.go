package db

import (
	"context"
	"fmt"
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
type session struct{ conn *pgx.Conn }

// Check pings the session. Its own deadline, not the caller's context: a
// pgx.Conn closes itself when a query's context ends mid-flight, and a
// worker stopping its maintenance must not end its session (and look dead)
// while its runs still finish.
func (s session) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return s.conn.Ping(ctx)
}

func (s session) Close(ctx context.Context) error { return s.conn.Close(ctx) }

// OpenSession implements engine.Store. It connects with the pool's own
// settings (and kern's schema, WithSchema), and records the session's backend pid, its start time and the
// start time of the server instance on worker id's registration.
func (d engineDB) OpenSession(ctx context.Context, id string) (engine.Session, error) {
	cfg := d.pool.Config().ConnConfig.Copy()
	withSearchPath(cfg, d.schema)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("kern: worker session: %w", err)
	}
	tag, err := conn.Exec(ctx, sqlRecordSession, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("worker %q is not registered", id)
	}
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("kern: worker session: %w", err)
	}
	return session{conn}, nil
}

// DeadSessionRuns implements engine.Store.
func (d engineDB) DeadSessionRuns(ctx context.Context) (bool, error) {
	var dead bool
	if err := d.pool.QueryRow(ctx, sqlDeadSessionRuns).Scan(&dead); err != nil {
		return false, fmt.Errorf("kern: worker sessions: %w", err)
	}
	return dead, nil
}
