package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/kern-go/kern/internal/logx"
)

// defaultMaxConns is Open's pool size unless the URL sets pool_max_conns.
const defaultMaxConns = 20

// DB is kern's handle on Postgres: the pool, an insert-only River client
// (so a run's row and its job commit together) and the process's one shared
// LISTEN connection. It is safe for concurrent use. Close it when done.
type DB struct {
	pool     *pgxpool.Pool
	ownsPool bool
	river    *river.Client[pgx.Tx]
	// notifier wakes the workers of batched submits, which insert their
	// jobs without River (notify.go, sqlSubmitRuns).
	notifier *insertNotifier
	listener *listener
	exec     execBatchers
	submits  *batcher[submitItem, *runRow]
	// rateOnce makes rateSt, the rate limits' batchers and cache
	// (ratelimit.go), on first use.
	rateOnce sync.Once
	rateSt   *rateState
	// schema is WithSchema's ("" without it).
	schema string
	// poolMode is what the pool connects to (pooler.go); direct is the
	// pool on WithDirectURL's URL, nil without one.
	poolMode PoolMode
	direct   *pgxpool.Pool
}

// Open connects to databaseURL with a pgxpool of its own. It runs no
// migrations: call Migrate once at deploy or start-up. With WithSchema,
// every connection of the pool has search_path set to the schema.
func Open(ctx context.Context, databaseURL string, opts ...Option) (*DB, error) {
	if databaseURL == "" {
		return nil, errors.New("kern: database URL is empty")
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("kern: open database: %w", err)
	}
	withSearchPath(cfg.ConnConfig, o.schema)
	if !strings.Contains(databaseURL, "pool_max_conns") {
		// pgxpool's default (4 on a 2-core host) starves a worker whose
		// runs each flush content while the app submits and waits.
		cfg.MaxConns = defaultMaxConns
	}
	// Behind a transaction pooler, no named prepared statements: the
	// backend a statement was prepared on serves other clients next.
	setExecMode := !strings.Contains(databaseURL, "default_query_exec_mode")
	if o.poolMode == PoolModeTransaction && setExecMode {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
	guard := &cancelGuard{}
	guard.wrap(&cfg.ConnConfig.Config)
	pool, err := connectPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	proxied, err := throughProxy(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("kern: connect to database: %w", err)
	}
	if o.poolMode == PoolModeDetect {
		if o.poolMode, err = detectPoolMode(ctx, pool); err != nil {
			pool.Close()
			return nil, fmt.Errorf("kern: connect to database: %w", err)
		}
		if o.poolMode == PoolModeTransaction && setExecMode {
			pool.Close()
			cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
			if pool, err = connectPool(ctx, cfg); err != nil {
				return nil, err
			}
		}
	}
	// No cancel request through a pooler (nocancel.go).
	guard.block.Store(proxied || o.poolMode == PoolModeTransaction)
	if o.schema != "" {
		// A pooler does not pass the connect-time search_path on.
		if err := checkSearchPath(pool, o.schema); err != nil {
			pool.Close()
			return nil, err
		}
	}
	d, err := newDB(pool, o)
	if err != nil {
		pool.Close()
		return nil, err
	}
	d.ownsPool = true
	return d, nil
}

func connectPool(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("kern: open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("kern: connect to database: %w", err)
	}
	return pool, nil
}

// New wraps an application's own pool; Close leaves that pool open.
//
// With WithSchema, the pool's connections must already resolve names in
// the schema (its search_path names it first: set
// ConnConfig.RuntimeParams["search_path"] before making the pool, or
// search_path in its URL, or the role's default): New checks one
// connection and refuses, with run.ErrInvalidArgument, a pool that does
// not, rather than changing the application's connections. The
// connections kern makes itself from the pool's settings (the listener,
// a worker's session) get the schema set either way.
func New(pool *pgxpool.Pool, opts ...Option) (*DB, error) {
	if pool == nil {
		return nil, errors.New("kern: pool is nil")
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if o.schema != "" {
		if err := checkSearchPath(pool, o.schema); err != nil {
			return nil, err
		}
	}
	if err := checkPoolMode(pool, &o); err != nil {
		return nil, err
	}
	return newDB(pool, o)
}

func newDB(pool *pgxpool.Pool, o options) (*DB, error) {
	logger := slog.Default()
	// An inserting client sends at most one "new jobs" notification per
	// queue per FetchCooldown, from inside the inserting transaction. At
	// River's 100ms, a submit soon after another sends none, and an idle
	// worker that already fetched finds its run only at its next poll, up
	// to a second later. The jobs of re-enqueues (retries, rescues,
	// answers) and of submits in the caller's transaction go through rc,
	// with the shortest cooldown River allows: a notification per commit.
	// Batched submits insert their jobs themselves and notify after their
	// commit, coalesced under load (notify.go).
	rc, err := newInsertClient(pool, o.schema, logger, river.FetchCooldownMin)
	if err != nil {
		return nil, err
	}
	d := &DB{
		pool:     pool,
		river:    rc,
		notifier: newInsertNotifier(pool, logger),
		listener: newListener(pool, logger),
		schema:   o.schema,
		poolMode: o.poolMode,
	}
	if o.direct != nil {
		// Lazy: it connects when River's notifier or Migrate first asks.
		o.direct.MaxConns = directMaxConns
		withSearchPath(o.direct.ConnConfig, o.schema)
		if d.direct, err = pgxpool.NewWithConfig(context.Background(), o.direct); err != nil {
			return nil, fmt.Errorf("kern: open direct database URL: %w", err)
		}
	}
	d.listener.schema = o.schema
	d.listener.connConfig = d.sessionConfig
	d.listener.poll = !d.ListensForNotifications()
	d.exec = d.newExecBatchers()
	d.submits = newBatcher(submitItem.key, d.submitBatch).withSize(submitItem.size)
	return d, nil
}

// newInsertClient is an insert-only River client whose insert notification
// goes out at most once per queue per cooldown.
func newInsertClient(pool *pgxpool.Pool, schema string, logger *slog.Logger, cooldown time.Duration) (*river.Client[pgx.Tx], error) {
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:            schema,
		Logger:            logx.RiverLogger(logger),
		FetchCooldown:     cooldown,
		FetchPollInterval: max(cooldown, time.Second), // no producer: unused
		// River's insert metrics (river.insert_count, …) go to otel's
		// global MeterProvider, read when they are recorded, so a provider
		// set after New counts too. Its insert spans are off: submits are
		// group-committed under a context of their own, where they would
		// only be orphans. The submitter's span context travels in each
		// job's metadata instead (telemetry.JobMetadata, the "traceparent"
		// otelriver's work side reads), set by SubmitRun.
		Middleware: []rivertype.Middleware{otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			TracerProvider: tracenoop.NewTracerProvider(),
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("kern: river client: %w", err)
	}
	return rc, nil
}

// SetLogger replaces the logger of background work (the listener). Call it
// before the DB is first used.
func (d *DB) SetLogger(l *slog.Logger) {
	if l != nil {
		d.listener.logger = l
		d.notifier.logger = l
	}
}

// Pool returns the underlying pool.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// Close gives back the process's unspent rate-limit leases, stops the
// listener and the submit notifier and, when Open made the pool, closes it.
func (d *DB) Close() {
	d.rate().closeLeases() // gives back unspent leases (ratelimit_lease.go)
	d.notifier.close()
	d.listener.close()
	if d.direct != nil {
		d.direct.Close()
	}
	if d.ownsPool {
		d.pool.Close()
	}
}
