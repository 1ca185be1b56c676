package db

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/kern-go/kern/run"
)

// PoolMode says what kern's database URL connects to, as far as sessions
// go. See the package doc, "Deployment: connection poolers".
type PoolMode string

const (
	// PoolModeDetect (the default) finds out at Open: two connections of
	// the pool that see one Postgres backend, or one connection that sees
	// two, are a transaction pooler's.
	PoolModeDetect PoolMode = "detect"
	// PoolModeSession: every connection is a Postgres session of its own,
	// for as long as it is open — Postgres itself, or a session pooler
	// (PgBouncer pool_mode=session).
	PoolModeSession PoolMode = "session"
	// PoolModeTransaction: a transaction pooler (PgBouncer
	// pool_mode=transaction) gives each transaction whichever backend is
	// free. kern then uses no named prepared statements on the pool
	// (pgx.QueryExecModeCacheDescribe, unless the URL sets
	// default_query_exec_mode), and opens what needs a session of its own —
	// LISTEN, a worker's liveness lock, Migrate's lock — on the direct URL
	// (WithDirectURL). Without one, workers poll for new runs (River's
	// PollOnly), waits re-check every pollInterval, a dead worker's runs are
	// rescued after RescueAfter, and Migrate refuses.
	PoolModeTransaction PoolMode = "transaction"
)

// ParsePoolMode reads a PoolMode from its name ("" is PoolModeDetect);
// anything else is run.ErrInvalidArgument.
func ParsePoolMode(s string) (PoolMode, error) {
	switch m := PoolMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "", PoolModeDetect:
		return PoolModeDetect, nil
	case PoolModeSession, PoolModeTransaction:
		return m, nil
	}
	return "", fmt.Errorf("kern: %w: pool mode %q: want detect, session or transaction", run.ErrInvalidArgument, s)
}

// WithPoolMode tells Open and New what the database URL connects to,
// instead of finding out (PoolModeDetect).
func WithPoolMode(m PoolMode) Option {
	return func(o *options) error {
		m, err := ParsePoolMode(string(m))
		if err != nil {
			return err
		}
		o.poolMode = m
		return nil
	}
}

// WithDirectURL gives kern a URL that reaches Postgres itself, for the
// connections that need a session of their own behind a transaction
// pooler: the LISTEN connections (kern's and River's), each worker's
// liveness session, and Migrate. Everything else goes through the pool.
// Behind a session pooler, or with no pooler, it is not needed; when
// given, it is used all the same. The URL must reach the same database.
func WithDirectURL(url string) Option {
	return func(o *options) error {
		if strings.TrimSpace(url) == "" {
			return fmt.Errorf("kern: %w: direct database URL is empty", run.ErrInvalidArgument)
		}
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return fmt.Errorf("kern: %w: direct database URL: %w", run.ErrInvalidArgument, err)
		}
		o.direct = cfg
		return nil
	}
}

// directMaxConns bounds the direct pool: River's LISTEN connection and
// Migrate's, one each at a time.
const directMaxConns = 4

// pollInterval is how often, with no LISTEN connection, the listener
// re-reads the runs its subscribers wait on: the added delay of a wait,
// a follow or a cancel.
const pollInterval = 250 * time.Millisecond

// PoolMode is the mode in effect: WithPoolMode's, or what Open or New
// found (never PoolModeDetect).
func (d *DB) PoolMode() PoolMode { return d.poolMode }

// HasDirectURL tells whether WithDirectURL was given.
func (d *DB) HasDirectURL() bool { return d.direct != nil }

// ListensForNotifications tells whether this DB's connections can LISTEN:
// without a pooler, behind a session pooler, or on the direct URL. A River
// client on it that cannot must run PollOnly (agent.NewWorker does).
func (d *DB) ListensForNotifications() bool {
	return d.poolMode == PoolModeSession || d.direct != nil
}

// RiverDriver is the River driver of kern's River clients: the pool's,
// with LISTEN on the direct pool when there is one (River opens its
// notifier's connection from the driver's listener).
func (d *DB) RiverDriver() riverdriver.Driver[pgx.Tx] {
	if d.direct == nil {
		return riverpgxv5.New(d.pool)
	}
	return listenDirect{Driver: riverpgxv5.New(d.pool), direct: riverpgxv5.New(d.direct)}
}

// listenDirect is a River driver whose LISTEN connection is a direct one.
type listenDirect struct {
	*riverpgxv5.Driver
	direct *riverpgxv5.Driver
}

func (l listenDirect) GetListener(params *riverdriver.GetListenenerParams) riverdriver.Listener {
	return l.direct.GetListener(params)
}

// sessionConfig is the configuration of a connection that needs a
// session of its own: the direct URL's, else the pool's; kern's schema
// either way.
func (d *DB) sessionConfig() *pgx.ConnConfig {
	var cfg *pgx.ConnConfig
	if d.direct != nil {
		cfg = d.direct.Config().ConnConfig
	} else {
		cfg = d.pool.Config().ConnConfig
	}
	withSearchPath(cfg, d.schema)
	return cfg // Config gives a copy
}

func (d *DB) logger() *slog.Logger { return d.listener.logger }

// backendPID is the Postgres backend a statement of conn runs on. The
// simple protocol: no prepared statement, which a transaction pooler's
// next client could find on the backend.
func backendPID(ctx context.Context, conn *pgx.Conn) (int32, error) {
	var pid int32
	err := conn.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&pid)
	return pid, err
}

// sessionIsOwn tells whether conn is a Postgres session of its own and
// not a transaction pooler's client connection. It opens a second
// connection with cfg and asks each, in turn, for its backend: a, b, a.
// Two connections of Postgres itself (or of a session pooler) never share
// a backend, and one keeps its backend for life; a transaction pooler
// gives b the backend a just freed (PgBouncer reuses the last one freed
// first), or a another one.
func sessionIsOwn(ctx context.Context, a *pgx.Conn, cfg *pgx.ConnConfig) (bool, error) {
	b, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer b.Close(context.WithoutCancel(ctx))
	return ownBackends(ctx, a, b)
}

func ownBackends(ctx context.Context, a, b *pgx.Conn) (bool, error) {
	a1, err := backendPID(ctx, a)
	if err != nil {
		return false, err
	}
	b1, err := backendPID(ctx, b)
	if err != nil {
		return false, err
	}
	a2, err := backendPID(ctx, a)
	if err != nil {
		return false, err
	}
	b2, err := backendPID(ctx, b)
	if err != nil {
		return false, err
	}
	return a1 == a2 && b1 == b2 && a1 != b1, nil
}

// detectPoolMode finds out whether pool's connections are a transaction
// pooler's (see sessionIsOwn), on one of its connections and one more
// made with its settings (a pool of one connection must not wait for a
// second).
func detectPoolMode(ctx context.Context, pool *pgxpool.Pool) (PoolMode, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a, err := pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer a.Release()
	own, err := sessionIsOwn(ctx, a.Conn(), pool.Config().ConnConfig)
	if err != nil {
		return "", err
	}
	if own {
		return PoolModeSession, nil
	}
	return PoolModeTransaction, nil
}

// errMigrateNeedsSession: Migrate behind a transaction pooler without a
// direct URL.
var errMigrateNeedsSession = fmt.Errorf("kern: %w: migrate: behind a transaction pooler, Migrate needs a session of its own "+
	"for its lock and River's migrations: set a direct URL (db.WithDirectURL, KERN_DIRECT_DATABASE_URL) "+
	"or run it on a URL that reaches Postgres itself", run.ErrInvalidArgument)

// checkPoolMode settles New's pool mode (detecting it when asked to) and
// refuses a transaction pooler's pool whose connections prepare named
// statements.
func checkPoolMode(pool *pgxpool.Pool, o *options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o.poolMode == PoolModeDetect {
		m, err := detectPoolMode(ctx, pool)
		if err != nil {
			return fmt.Errorf("kern: check the pool: %w", err)
		}
		o.poolMode = m
	}
	if o.poolMode == PoolModeTransaction && pool.Config().ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		return fmt.Errorf("kern: %w: the pool is a transaction pooler's and its connections prepare named statements, "+
			"which the pooler's next client finds on the backend: set default_query_exec_mode=cache_describe "+
			"(ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe)", run.ErrInvalidArgument)
	}
	return nil
}
