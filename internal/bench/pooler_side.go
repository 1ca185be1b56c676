package bench

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/pgtest"
)

// openSide makes m's side: a fresh database from env.NewDB (migrated on
// the database URL itself), PgBouncer in front of it when m has one, and a
// DB opened on m's URL as an application would, kern finding out the pool
// mode.
func openSide(ctx context.Context, env Env, m poolerMode, pc PoolerConfig) (_ *poolerSide, err error) {
	counter, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	s := &poolerSide{mode: m, counter: counter, dbURL: env.DatabaseURL(counter), closers: []func(){done}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.url = s.dbURL
	want := db.PoolModeSession
	if m.bouncer != "" {
		target, poolParams, err := splitPoolParams(s.dbURL)
		if err != nil {
			return nil, err
		}
		bcfg := pgtest.BouncerConfig{Mode: m.bouncer}
		if m.bouncer == pgtest.PoolSession {
			// A session pooler holds a server connection per client
			// connection: at PgBouncer's default 20 the application's pool
			// alone would take them all, and worker processes could not
			// start.
			bcfg.DefaultPoolSize = sessionPoolSize
		}
		b, err := pgtest.StartBouncer(ctx, target, bcfg)
		if err != nil {
			return nil, err
		}
		s.bouncer = b
		if s.url, err = withParams(b.URL(), poolParams); err != nil {
			_ = b.Stop()
			return nil, err
		}
		s.closers = append(s.closers, func() { _ = b.Stop() })
		if m.bouncer == pgtest.PoolTransaction {
			want = db.PoolModeTransaction
		}
	}
	var opts []db.Option
	if m.direct {
		opts = append(opts, db.WithDirectURL(s.dbURL))
	}
	d, err := db.Open(ctx, s.url, opts...)
	if err != nil {
		return nil, err
	}
	s.d = d
	s.closers = append(s.closers, d.Close)
	if d.PoolMode() != want {
		return nil, fmt.Errorf("kern found pool mode %q; want %q", d.PoolMode(), want)
	}
	if !d.ListensForNotifications() {
		// No session to judge a worker by: its runs' heartbeats alone.
		s.rescue = pc.HeartbeatRescueAfter
	}
	return s, nil
}

// sessionPoolSize is default_pool_size of the session-mode PgBouncer:
// room for the application's pool (20) and two worker processes'.
const sessionPoolSize = 100

// splitPoolParams takes pgxpool's own parameters (pool_max_conns, …) off
// a postgres:// URL. StartBouncer checks PgBouncer with a plain pgx
// connection, which sends a parameter it does not know as a startup
// parameter, and PgBouncer refuses the connection over it; kern's pool
// is given them back on PgBouncer's URL. A keyword/value DSN is left as
// it is.
func splitPoolParams(raw string) (string, url.Values, error) {
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return raw, nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("parse database URL: %w", err)
	}
	q, pool := u.Query(), url.Values{}
	for k, v := range q {
		if strings.HasPrefix(k, "pool_") {
			pool[k] = v
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), pool, nil
}

// withParams is the postgres:// URL raw with params added.
func withParams(raw string, params url.Values) (string, error) {
	if len(params) == 0 {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse PgBouncer URL: %w", err)
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// polls tells whether the side's workers poll for new runs (River
// PollOnly) rather than being notified.
func (s *poolerSide) polls() bool { return !s.d.ListensForNotifications() }

// throughput submits cfg.Runs background runs from cfg.Submitters
// goroutines to a worker of cfg's settings on the side's URL and returns
// runs/s from the first submit to the last run finished.
func (s *poolerSide) throughput(ctx context.Context, env Env, cfg Config) (float64, error) {
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: s.d}
	stop, err := newWorker(ctx, s.d, env, cfg, a)
	if err != nil {
		return 0, err
	}
	defer stop()
	// The database keeps earlier rounds' runs: count from where they end.
	finished0, completed0, err := s.finished(ctx)
	if err != nil {
		return 0, err
	}
	return drive(ctx, cfg, func() error {
		_, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
		return err
	}, func() (int, error) {
		finished, completed, err := s.finished(ctx)
		n := finished - finished0
		if err == nil && n == cfg.Runs && completed-completed0 != cfg.Runs {
			err = fmt.Errorf("throughput: %d of %d runs completed", completed-completed0, cfg.Runs)
		}
		return n, err
	})
}

// finished counts the side's finished and completed runs, on the database
// URL itself so the counting stays out of the pooler being measured.
func (s *poolerSide) finished(ctx context.Context) (finished, completed int, err error) {
	err = s.counter.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('completed','error','cancelled')),
		count(*) FILTER (WHERE status = 'completed') FROM kern_run`).Scan(&finished, &completed)
	return finished, completed, err
}

// defaultFetchPoll is WorkerConfig's default FetchPollInterval: how often
// a polling worker (PollOnly) looks for new runs.
const defaultFetchPoll = time.Second

// measurePickup adds n idle pickups on a worker of default WorkerConfig,
// as the pickup group measures them. A polling side's submits are spread
// over a whole poll cycle: one run at a time, each submitted soon after
// the last one's pickup, would otherwise always land at the same point
// of the cycle.
func (s *poolerSide) measurePickup(ctx context.Context, env Env, cfg Config, round, n int) error {
	if n <= 0 {
		return nil
	}
	model := &arrivals{Model: env.Model, at: map[string]chan time.Time{}}
	a := &agent.Agent{Name: "bench", Model: model, DB: s.d}
	defaults := cfg
	defaults.FetchCooldown, defaults.FetchPollInterval, defaults.Concurrency = 0, 0, 0
	stop, err := newWorker(ctx, s.d, env, defaults, a)
	if err != nil {
		return err
	}
	defer stop()
	gap := 50 * time.Millisecond
	if s.polls() {
		gap = defaultFetchPoll
	}
	lat, err := idlePickups(ctx, a, model, fmt.Sprintf("idle %d", round), n, gap)
	s.pickups = append(s.pickups, lat...)
	return err
}

// measureRecovery kills one worker process with poolerKillRuns runs in
// flight (killRound); the victim and the survivor are given the side's
// URL, its direct URL if it has one, and its RescueAfter.
func (s *poolerSide) measureRecovery(ctx context.Context, env Env, round int) error {
	direct := ""
	if s.mode.direct {
		direct = s.dbURL
	}
	spawn := func(name string) (*WorkerProcess, error) {
		return env.SpawnPooledWorker(name, s.url, direct, s.rescue)
	}
	submitter := &agent.Agent{Name: "bench", Model: env.Model, DB: s.d}
	got, lost, doubled, err := killRound(ctx, env, s.counter, submitter, poolerKillRuns, spawn, round)
	s.recovered = append(s.recovered, got...)
	s.lost += lost
	s.doubled += doubled
	return err
}

// bouncerTrouble matches the lines of PgBouncer's log that say a query
// was cancelled, a connection was in a bad state, or something failed.
var bouncerTrouble = regexp.MustCompile(`(?i)cancel|bad state|fatal`)

// bouncerHealth says whether the side's PgBouncer is still running and
// how many lines of its log match bouncerTrouble, and gives the first few
// of those lines (the message only: time, pid and client cut off).
func (s *poolerSide) bouncerHealth() (summary string, lines []string) {
	if s.bouncer == nil {
		return "no PgBouncer", nil
	}
	state := "alive"
	if !s.bouncer.Alive() {
		state = "DEAD"
	}
	n := 0
	for line := range strings.Lines(s.bouncer.Log()) {
		if !bouncerTrouble.MatchString(line) {
			continue
		}
		n++
		if len(lines) < 3 {
			msg := bouncerLinePrefix.ReplaceAllString(strings.TrimSpace(line), "$1 ")
			if len(msg) > 200 {
				msg = msg[:200] + "…"
			}
			lines = append(lines, msg)
		}
	}
	if n == 0 {
		return state + ", log clean", nil
	}
	return fmt.Sprintf("%s, %d log lines match", state, n), lines
}

// bouncerLinePrefix is what a PgBouncer log line starts with before its
// message: time, pid, level (kept: $1), and the client's or server's id
// and address.
var bouncerLinePrefix = regexp.MustCompile(`^\S+ \S+ \S+ \[\d+\] (\S+) (?:[CS]-0x[0-9a-f]+: \S+ )?`)
