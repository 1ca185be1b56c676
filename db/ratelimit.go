package db

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// Rate limits shared by the fleet
//
// SetRateLimit stores a model's budgets in kern_rate_limit
// (migrations/014, 015). Every execution, in every worker process, asks
// (engine.RateLimiter.Reserve) before each model call of a limited model
// for one request and an estimate of its tokens; the answer is a grant, or
// how long to wait and why. There are two paths to a grant: while the
// budget is far from binding, the process's lease of it (one statement per
// lease, none per call: ratelimit_lease.go, "Budget leases"); otherwise
// the exact per-call path below, with its queue. Both draw from the same
// totals under the same lock, so the rules below hold for both.
//
// How the window is kept exact. kern_rate_grant is a sliding log: one row
// per grant — a call allowed, or a lease of n requests and t tokens — at
// Postgres's clock, with the requests and tokens it counts. The model's row
// in kern_rate_limit keeps the totals of the grants still in the window. A
// reservation (kern_rate_reserve) locks that row (the model's lock: every
// statement that touches the model's grants or totals takes it first),
// reads clock_timestamp() after the lock, deletes the grants that left the
// window and subtracts them, and then checks "totals + this ≤ budget" for
// each item of its batch in turn, inserting a grant for each it allows. So
// no window of the model's length ever holds more grants (or tokens, up to
// the estimates of calls in flight, see below) than the budget, however
// many workers ask at once, and the check costs O(1) plus the grants that
// expire, not a sum over the window. A burst up to the budget is allowed
// at once. A lease is dated at the end of its life (the last moment a call
// may start from it), so it, too, counts for a whole window after every
// call it allows.
//
// Clocks. Every time that matters — a grant's, the window's edge, a pause's
// end, a waiter's last sighting — is Postgres's clock_timestamp(), read
// under the model's lock; a worker's own clock is never used, so a worker
// whose clock is off changes nothing. (What a worker measures itself is
// only durations: how long it sleeps before asking again, and how long it
// may spend a lease, from before it asked for it — never longer than the
// life Postgres dated.)
//
// Tokens. A reservation counts an estimate (agent's estimateTokens:
// the request's characters / 4); once the call returns, Reconcile replaces
// it with the total the model reported, moving the totals by the
// difference — at once for an exact grant, with the process's next
// statement on the model (or within 250 ms) for a lease's call. Between the
// two, the window counts the estimate: calls in flight may together spend
// more than the estimates said, by at most their outputs; the next
// reservation sees the reconciled figures. A reservation larger than the
// whole token budget is allowed alone into an empty window (it would never
// fit otherwise); a call too large for a lease takes the exact path.
//
// A worker that dies holding a grant: the grant is a committed row, so its
// estimate stays counted until it leaves the window (60 s), and it is never
// reconciled; nothing leaks beyond the window. A lease it held counts whole
// (spent or not) until it leaves the window, a lease's life later. A
// reservation in doubt (sent, no answer) counts the same way. A worker that
// dies while its run waits leaves a waiter row, which holds no one back
// once it has not been refreshed for 5 s (and is deleted then).
//
// Order. A refused run's waiter row (priority: its River job's; then the
// run's created_at, then its id) keeps its place: budget that frees goes
// to the first waiter, a later run asking meanwhile is refused with reason
// "queue" though the budget is there, and no lease is granted while a run
// waits. Waiters ask again when their wait ends (at least every second,
// which keeps their row alive), always on the exact path.
//
// Pause. A 429 of a limited model (agent side) pauses the model for the
// fleet: paused_until = clock_timestamp() + Retry-After (1 s without the
// header), never shortened by a later, shorter one. Every reservation of
// the model is refused until then, with reason "paused", and no lease is
// granted; the process that saw the 429 drops its lease first, and other
// processes' leases end within their life (at most 500 ms).
//
// Cost. A budget far from binding costs a lease statement per process
// about every lease life (the lease grows to the process's rate), plus a
// settle statement when deltas find no ride; exact reservations go through
// a batcher, so concurrent runs of a process share one statement and one
// commit. A model with no limit costs nothing: Limited reads the process's
// set of limited models, refreshed at most once a second by the first
// caller that finds it older than that (while the others use the old set),
// and at once in the process that calls SetRateLimit. Another process sees
// a new or removed limit within about a second.

// rateCacheTTL is how old the process's set of limited models may get.
const rateCacheTTL = time.Second

// defaultRateWindow is the window of the contract; tests shorten a model's
// through engine.RateLimiter.SetWindow.
const defaultRateWindow = 60 * time.Second

// rateState is a DB's rate-limit side: the cache and the batchers.
type rateState struct {
	d       *DB
	refresh sync.Mutex // held by the one caller refreshing the cache
	mu      sync.RWMutex
	limited map[string]bool // model → it has a token budget
	loaded  time.Time
	reserve *batcher[engine.Reservation, engine.Grant]
	recon   *batcher[reconcileItem, struct{}]
	leases  leaseBook // ratelimit_lease.go
}

type reconcileItem struct {
	g      engine.Grant
	tokens int
}

// rate is d's rate-limit state, made on first use.
func (d *DB) rate() *rateState {
	d.rateOnce.Do(func() {
		s := &rateState{d: d}
		s.leases.settleDelay, s.leases.fire = defaultSettleDelay, s.settle
		s.reserve = newBatcher(func(r engine.Reservation) string { return r.RunID + "\x00" + r.Model }, s.reserveBatch)
		s.recon = newBatcher(func(r reconcileItem) string { return strconv.FormatInt(r.g.ID, 10) }, s.reconcileBatch)
		d.rateSt = s
	})
	return d.rateSt
}

// SetRateLimit sets the request and token budgets of l.Model, shared by
// every worker on the database; both zero removes the limit. Negative
// budgets or an empty model are run.ErrInvalidArgument, and nothing is
// written. See the package's "Rate limits shared by the fleet".
func (d *DB) SetRateLimit(ctx context.Context, l run.RateLimit) error {
	switch {
	case l.Model == "":
		return fmt.Errorf("kern: %w: a rate limit needs a model id", run.ErrInvalidArgument)
	case l.RequestsPerMinute < 0 || l.TokensPerMinute < 0:
		return fmt.Errorf("kern: %w: rate limit budgets of %q must not be negative", run.ErrInvalidArgument, l.Model)
	case l.RequestsPerMinute > 1<<30 || l.TokensPerMinute > 1<<30:
		return fmt.Errorf("kern: %w: rate limit budgets of %q are too large", run.ErrInvalidArgument, l.Model)
	}
	var err error
	if l.RequestsPerMinute == 0 && l.TokensPerMinute == 0 {
		_, err = d.pool.Exec(ctx, sqlDeleteRateLimit, l.Model)
	} else {
		_, err = d.pool.Exec(ctx, sqlSetRateLimit, l.Model, l.RequestsPerMinute, l.TokensPerMinute)
	}
	if err != nil {
		return fmt.Errorf("kern: set rate limit: %w", err)
	}
	d.rate().invalidate()
	return nil
}

// ListRateLimits lists the models with a limit, by model id.
func (d *DB) ListRateLimits(ctx context.Context) ([]run.RateLimit, error) {
	rows, err := d.pool.Query(ctx, sqlListRateLimits)
	if err != nil {
		return nil, fmt.Errorf("kern: list rate limits: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[run.RateLimit])
	if err != nil {
		return nil, fmt.Errorf("kern: list rate limits: %w", err)
	}
	return out, nil
}

// RateLimiter hands the executing side its rate limits; only this module
// can call it (engine.Key).
func (d *DB) RateLimiter(engine.Key) engine.RateLimiter { return d.rate() }

// invalidate forgets the cache and drops the process's leases, so a new
// budget counts here at once (other processes: within a second).
func (s *rateState) invalidate() {
	s.mu.Lock()
	s.loaded = time.Time{}
	s.mu.Unlock()
	s.leases.drop("", false)
}

// Limited reads the cache, refreshing it when it is stale: the first caller
// to find it so refreshes it, others go on with the old set (all wait only
// for the very first load).
func (s *rateState) Limited(model string) bool {
	s.mu.RLock()
	_, ok := s.limited[model]
	fresh, loaded := time.Since(s.loaded) < rateCacheTTL, s.limited != nil
	s.mu.RUnlock()
	if fresh {
		return ok
	}
	if !loaded {
		s.refresh.Lock()
	} else if !s.refresh.TryLock() {
		return ok
	}
	defer s.refresh.Unlock()
	s.mu.RLock()
	fresh = time.Since(s.loaded) < rateCacheTTL
	_, ok = s.limited[model]
	s.mu.RUnlock()
	if fresh {
		return ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.load(ctx)
	if err != nil {
		// Postgres away: keep the old set (empty on the first load, so
		// calls go on unlimited rather than stall); try again next time.
		s.mu.Lock()
		if s.limited == nil {
			s.limited = map[string]bool{}
		}
		s.mu.Unlock()
		return ok
	}
	s.mu.Lock()
	s.limited, s.loaded = m, time.Now()
	s.mu.Unlock()
	_, ok = m[model]
	return ok
}

func (s *rateState) load(ctx context.Context) (map[string]bool, error) {
	rows, err := s.d.pool.Query(ctx, sqlLimitedModels)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	var model string
	var tokens bool
	_, err = pgx.ForEachRow(rows, []any{&model, &tokens}, func() error {
		m[model] = tokens
		return nil
	})
	return m, err
}

func (s *rateState) tokenLimited(model string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.limited[model]
}

// Reserve spends from the process's lease of the model while it can (see
// ratelimit_lease.go), and takes the exact path otherwise; a reservation
// that waited always takes the exact path, which keeps the queue's order.
func (s *rateState) Reserve(ctx context.Context, r engine.Reservation) (engine.Grant, error) {
	if !r.Waited {
		if g, ok, err := s.fromLease(ctx, r); err != nil || ok {
			return g, err
		}
	}
	return s.reserve.do(ctx, r)
}

func (s *rateState) reserveBatch(ctx context.Context, items []engine.Reservation) ([]engine.Grant, error) {
	n := len(items)
	runs, models, tokens, execs, waited := make([]string, n), make([]string, n), make([]int32, n), make([]int32, n), make([]bool, n)
	for i, it := range items {
		runs[i], models[i], tokens[i], execs[i], waited[i] = it.RunID, it.Model, int32(min(max(it.Tokens, 0), 1<<30)), int32(it.Execution), it.Waited
	}
	// The batch takes along the deltas of its models (ratelimit_lease.go).
	d := s.leases.takeModels(models)
	rows, err := s.d.pool.Query(ctx, sqlReserve, runs, models, tokens, execs, waited, d.ids, d.models, d.req, d.tok)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Grant, n)
	var idx, rpm, tpm int32
	var ok bool
	var id, waitMS int64
	var reason string
	_, err = pgx.ForEachRow(rows, []any{&idx, &ok, &id, &waitMS, &reason, &rpm, &tpm}, func() error {
		i := int(idx) - 1
		if i < 0 || i >= n {
			return fmt.Errorf("kern: reservation %d out of range", idx)
		}
		out[i] = engine.Grant{OK: ok, ID: id, Model: items[i].Model, Wait: time.Duration(waitMS) * time.Millisecond,
			Reason: reason, RequestsPerMinute: int(rpm), TokensPerMinute: int(tpm), TokenLimited: tpm > 0,
			Tokens: int(tokens[i])}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, g := range out {
		if g.RequestsPerMinute > 0 || g.TokensPerMinute > 0 {
			s.leases.saw(g.Model, g.TokensPerMinute)
		}
	}
	return out, nil
}

func (s *rateState) Reconcile(ctx context.Context, g engine.Grant, tokens int) error {
	if g.ID == 0 || !g.TokenLimited {
		return nil // only a token budget needs the figure
	}
	if g.Lease {
		s.leases.reconcile(g, tokens) // written with the next statement
		return nil
	}
	_, err := s.recon.do(ctx, reconcileItem{g: g, tokens: tokens})
	return err
}

func (s *rateState) reconcileBatch(ctx context.Context, items []reconcileItem) ([]struct{}, error) {
	n := len(items)
	ids, models, tokens := make([]int64, n), make([]string, n), make([]int32, n)
	for i, it := range items {
		ids[i], models[i], tokens[i] = it.g.ID, it.g.Model, int32(min(max(it.tokens, 0), 1<<30))
	}
	if _, err := s.d.pool.Exec(ctx, sqlReconcile, ids, models, tokens); err != nil {
		return nil, err
	}
	return make([]struct{}, n), nil
}

func (s *rateState) Pause(ctx context.Context, model string, d time.Duration) error {
	// This process stops spending its lease before the fleet is told.
	s.leases.drop(model, true)
	_, err := s.d.pool.Exec(ctx, sqlPause, model, max(d.Milliseconds(), 1))
	return err
}

func (s *rateState) Throttled(ctx context.Context, f engine.Fence, seq int64, model string, wait time.Duration, why string) error {
	var n int
	if err := s.d.pool.QueryRow(ctx, sqlThrottled, f.RunID, f.Execution, seq, why, model, wait.Milliseconds()).Scan(&n); err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	// Not applied: applied already by an earlier send, or the run is lost.
	var at int64
	err := s.d.pool.QueryRow(ctx, sqlThrottledSeq, f.RunID, f.Execution).Scan(&at)
	switch {
	case err == pgx.ErrNoRows:
		return run.ErrNotRunning
	case err != nil:
		return err
	case at == seq:
		return nil
	}
	return run.ErrNotRunning
}

func (s *rateState) Withdraw(ctx context.Context, f engine.Fence, model string) error {
	_, err := s.d.pool.Exec(ctx, sqlWithdraw, f.RunID, f.Execution, model)
	return err
}

func (s *rateState) SetWindow(ctx context.Context, model string, window time.Duration) error {
	_, err := s.d.pool.Exec(ctx, sqlSetRateWindow, model, max(window.Milliseconds(), 1))
	return err
}
