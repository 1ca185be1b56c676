package db_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// rateStatements counts the rate-limit statements a DB handle sends (a pgx
// tracer on its pool), by the function they call.
type rateStatements struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *rateStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	for _, fn := range []string{"kern_rate_lease", "kern_rate_reserve", "kern_rate_settle", "kern_rate_reconcile"} {
		if strings.Contains(data.SQL, fn+"(") {
			c.mu.Lock()
			c.n[fn]++
			c.mu.Unlock()
		}
	}
	return ctx
}

func (c *rateStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// counts returns the counts so far and starts again from zero.
func (c *rateStatements) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func total(n map[string]int) int {
	s := 0
	for _, v := range n {
		s += v
	}
	return s
}

// openCounted opens a DB handle (a process, as far as leases go) on url
// whose rate-limit statements are counted; closing it (close, or the
// test's end) is a process that stops without a word.
func openCounted(t *testing.T, url string) (d *db.DB, c *rateStatements, closeIt func()) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(kerntest.WithPoolSize(url, 4))
	if err != nil {
		t.Fatal(err)
	}
	c = &rateStatements{n: map[string]int{}}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = db.New(pool); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	closeIt = func() { once.Do(func() { d.Close(); pool.Close() }) }
	t.Cleanup(closeIt)
	return d, c, closeIt
}

// used is the model's totals: requests and tokens counted in its window.
func used(t *testing.T, d *db.DB, model string) (requests, tokens int) {
	t.Helper()
	if err := d.Pool().QueryRow(context.Background(), `SELECT requests_used, tokens_used FROM kern_rate_limit WHERE model = $1`, model).
		Scan(&requests, &tokens); err != nil {
		t.Fatal(err)
	}
	return requests, tokens
}

func setLimit(t *testing.T, d *db.DB, l run.RateLimit, window time.Duration) {
	t.Helper()
	ctx := kerntest.Context(t, 10*time.Second)
	if err := d.SetRateLimit(ctx, l); err != nil {
		t.Fatal(err)
	}
	if window > 0 {
		if err := d.RateLimiter(engine.Key{}).SetWindow(ctx, l.Model, window); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRateLimitLeaseSpendsLocally: with a budget far from binding, 200
// reservations and their reconciliations cost a statement per lease (the
// lease doubles while it runs out early: 1, 2, 4 … 128), not two per call;
// once the leases' lives are over, the window counts exactly what was
// spent: 200 requests and the 200 × 50 tokens reported, the rest given back.
func TestRateLimitLeaseSpendsLocally(t *testing.T) {
	url := kerntest.DatabaseURL(t)
	d, c, _ := openCounted(t, url)
	setLimit(t, d, run.RateLimit{Model: "m", RequestsPerMinute: 1_000_000, TokensPerMinute: 1 << 30}, 0)
	rl := d.RateLimiter(engine.Key{})
	ctx := kerntest.Context(t, 20*time.Second)
	c.counts()
	const calls = 200
	for i := range calls {
		g := reserve(t, rl, fmt.Sprintf("r%d", i), "m", 10)
		if !g.OK || !g.Lease || g.ID == 0 {
			t.Fatalf("reservation %d: %+v, want granted from a lease", i, g)
		}
		if err := rl.Reconcile(ctx, g, 50); err != nil {
			t.Fatal(err)
		}
	}
	n := c.counts()
	if n["kern_rate_reserve"]+n["kern_rate_reconcile"] != 0 || n["kern_rate_lease"] > 12 || total(n) > 16 {
		t.Fatalf("%d reservations and reconciliations cost %v; want a lease statement per lease (about 8)", calls, n)
	}
	if rows := count(t, ctx, d, `SELECT count(*) FROM kern_rate_grant`); rows > 12 {
		t.Fatalf("%d grant rows for %d calls; want one per lease", rows, calls)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, tok := used(t, d, "m")
		if r == calls && tok == calls*50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the window counts %d requests and %d tokens; want %d and %d", r, tok, calls, calls*50)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline: the last lease's life must end
	}
}

// TestRateLimitLeaseReconcileRidesNextStatement: a lease call's
// reconciliation is no statement of its own; the next statement on the
// model (a lease, or an exact reservation) writes it, with what the lease
// did not spend. The settle timer is off here, so nothing else could.
func TestRateLimitLeaseReconcileRidesNextStatement(t *testing.T) {
	url := kerntest.DatabaseURL(t)
	d, c, _ := openCounted(t, url)
	db.SetLeaseSettle(d, 0)
	setLimit(t, d, run.RateLimit{Model: "m", TokensPerMinute: 1_000_000}, 0)
	rl := d.RateLimiter(engine.Key{})
	ctx := kerntest.Context(t, 10*time.Second)
	c.counts()
	a := reserve(t, rl, "a", "m", 10) // the first lease: one request, 10 tokens
	if !a.OK || !a.Lease {
		t.Fatalf("first reservation: %+v", a)
	}
	if err := rl.Reconcile(ctx, a, 500); err != nil {
		t.Fatal(err)
	}
	if n := c.counts(); n["kern_rate_lease"] != 1 || total(n) != 1 {
		t.Fatalf("a reservation and its reconciliation cost %v; want the one lease statement", n)
	}
	if got := count(t, ctx, d, `SELECT tokens FROM kern_rate_grant WHERE id = $1`, a.ID); got != 10 {
		t.Fatalf("before the next statement the lease counts %d tokens, want its 10", got)
	}
	b := reserve(t, rl, "b", "m", 10) // the lease ran out: a new one, carrying a's usage
	if !b.OK || !b.Lease || b.ID == a.ID {
		t.Fatalf("second reservation: %+v", b)
	}
	if n := c.counts(); n["kern_rate_lease"] != 1 || total(n) != 1 {
		t.Fatalf("the second reservation cost %v; want one lease statement", n)
	}
	if got := count(t, ctx, d, `SELECT tokens FROM kern_rate_grant WHERE id = $1`, a.ID); got != 500 {
		t.Fatalf("after the next lease the first counts %d tokens, want the 500 reported", got)
	}
	lease2 := count(t, ctx, d, `SELECT tokens FROM kern_rate_grant WHERE id = $1`, b.ID)
	// An exact reservation (one that waited) takes b's usage along too.
	if err := rl.Reconcile(ctx, b, 300); err != nil {
		t.Fatal(err)
	}
	g, err := rl.Reserve(ctx, engine.Reservation{Fence: engine.Fence{RunID: "c", Execution: 1}, Model: "m", Tokens: 10, Waited: true})
	if err != nil || !g.OK || g.Lease {
		t.Fatalf("exact reservation: %+v, %v", g, err)
	}
	if n := c.counts(); n["kern_rate_reserve"] != 1 || total(n) != 1 {
		t.Fatalf("the exact reservation cost %v; want one statement", n)
	}
	if got := count(t, ctx, d, `SELECT tokens FROM kern_rate_grant WHERE id = $1`, b.ID); got != lease2+290 {
		t.Fatalf("the second lease counts %d tokens, want %d + 290 reported beyond its estimate", got, lease2)
	}
	if _, tok := used(t, d, "m"); tok != 500+lease2+290+10 {
		t.Fatalf("the window counts %d tokens, want %d", tok, 500+lease2+290+10)
	}
}

// TestRateLimitLeaseLife: a lease is spent only during its life (a 20th of
// the window, at most 500 ms: 500 ms here); after it, the next call asks
// again though the lease had requests left, and the grant is dated at the
// end of the life, so it counts a whole window after its last possible
// call. A lease answered after its life (a stalled machine) is no lease:
// that attempt is set aside and another model tried.
func TestRateLimitLeaseLife(t *testing.T) {
	const life = 500 * time.Millisecond
	url := kerntest.DatabaseURL(t)
	d, c, _ := openCounted(t, url)
	db.SetLeaseSettle(d, 0) // only the life's check ends the lease, not the timer
	rl := d.RateLimiter(engine.Key{})
	ctx := kerntest.Context(t, 60*time.Second)
	pgNow := func() (at time.Time) {
		if err := d.Pool().QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	var (
		g             engine.Grant
		model         string
		before, after time.Time
	)
	for attempt := 0; !g.Lease; attempt++ {
		if attempt == 10 {
			t.Fatalf("%+v, want a lease (10 attempts: every lease statement took longer than its life)", g)
		}
		model = fmt.Sprintf("m%d", attempt)
		setLimit(t, d, run.RateLimit{Model: model, RequestsPerMinute: 1000}, 20*life)
		reserve(t, rl, "a", model, 1)
		before = pgNow()
		g = reserve(t, rl, "b", model, 1) // a lease of 2, 1 left
		after = pgNow()
	}
	var at time.Time
	if err := d.Pool().QueryRow(ctx, `SELECT at FROM kern_rate_grant WHERE id = $1`, g.ID).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if at.Before(before.Add(life)) || at.After(after.Add(life)) {
		t.Fatalf("the lease is dated %v after it was asked for (%v for the round trip); want the end of its %v life",
			at.Sub(before), after.Sub(before), life)
	}
	c.counts()
	time.Sleep(life + 30*time.Millisecond) // past the lease's life, on purpose
	if h := reserve(t, rl, "c", model, 1); !h.OK || h.ID == g.ID {
		t.Fatalf("after the lease's life: %+v, want a new lease", h)
	}
	if n := c.counts(); n["kern_rate_lease"] != 1 {
		t.Fatalf("after the lease's life the call cost %v; want a new lease statement", n)
	}
}

// TestRateLimitLeaseCountsAWindowAfterItsLastCall: a call spent late in
// a lease's life is counted for a whole window after it: the budget it
// took frees no earlier than a window after the call started (the grant is
// dated at the end of the lease's life, not when it was granted). Wall
// clocks are compared: Go's and Postgres's, on one host.
func TestRateLimitLeaseCountsAWindowAfterItsLastCall(t *testing.T) {
	const budget, window = 40, 4 * time.Second // leases of at most 2, life 200 ms
	url := kerntest.DatabaseURL(t)
	a, _, _ := openCounted(t, url)
	b, _, _ := openCounted(t, url)
	ra, rb := a.RateLimiter(engine.Key{}), b.RateLimiter(engine.Key{})
	ctx := kerntest.Context(t, 60*time.Second)
	// One lease of 2 (set, not grown: a lease's size otherwise depends on
	// how fast the calls before it came), its second request spent late.
	// A machine that stalls past the lease's life (its answer, or the
	// sleep, late) spoils an attempt, not the test: another model is tried.
	var (
		model string
		late  time.Time
	)
	for attempt := 0; model == ""; attempt++ {
		if attempt == 10 {
			t.Fatal("10 attempts, each stalled past its lease's 200 ms life")
		}
		m := fmt.Sprintf("m%d", attempt)
		setLimit(t, a, run.RateLimit{Model: m, RequestsPerMinute: budget}, window)
		db.SetNextLease(a, m, 2)
		l := reserve(t, ra, "a1", m, 1)
		time.Sleep(100 * time.Millisecond) // late in the 200 ms life, on purpose
		late = time.Now()
		if g := reserve(t, ra, "a2", m, 1); l.Lease && g.Lease && g.ID == l.ID {
			model = m
		}
	}
	exact := func(id string) engine.Grant {
		g, err := rb.Reserve(ctx, engine.Reservation{Fence: engine.Fence{RunID: id, Execution: 1}, Model: model, Tokens: 1, Waited: true})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for i := range budget - 2 {
		if g := exact(fmt.Sprintf("fill%d", i)); !g.OK {
			t.Fatalf("fill %d: %+v", i, g)
		}
	}
	// The next grant (one waiting run asking again): when the lease
	// leaves the window.
	for {
		g := exact("next")
		if !g.OK {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		var at time.Time
		if err := b.Pool().QueryRow(ctx, `SELECT at FROM kern_rate_grant WHERE id = $1`, g.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if at.Before(late.Add(window)) {
			t.Fatalf("the lease's budget came back %v after its late call; want at least the window, %v", at.Sub(late), window)
		}
		return
	}
}

// TestRateLimitPauseDropsLease: a 429's pause stops the process's calls at
// once, though its lease has budget left; a process without a lease is not
// granted one while the pause lasts, and one with a lease stops when its
// life ends.
func TestRateLimitPauseDropsLease(t *testing.T) {
	url := kerntest.DatabaseURL(t)
	a, _, _ := openCounted(t, url)
	b, _, _ := openCounted(t, url)
	c, _, _ := openCounted(t, url)
	setLimit(t, a, run.RateLimit{Model: "m", RequestsPerMinute: 1_000_000}, 0)
	ra, rb, rc := a.RateLimiter(engine.Key{}), b.RateLimiter(engine.Key{}), c.RateLimiter(engine.Key{})
	for i := range 4 { // leases of 1, 2 and 4: three requests left
		if g := reserve(t, ra, fmt.Sprintf("a%d", i), "m", 1); !g.Lease {
			t.Fatalf("%+v, want a lease", g)
		}
	}
	reserve(t, rc, "c0", "m", 1)
	reserve(t, rc, "c1", "m", 1) // c holds a lease of 2 too, one left
	ctx := kerntest.Context(t, 10*time.Second)
	if err := ra.Pause(ctx, "m", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if g := reserve(t, ra, "a-after", "m", 1); g.OK || g.Reason != "paused" {
		t.Fatalf("the pausing process, its lease not spent: %+v, want refused (paused)", g)
	}
	if g := reserve(t, rb, "b-after", "m", 1); g.OK || g.Reason != "paused" {
		t.Fatalf("another process: %+v, want refused (paused)", g)
	}
	// Another process's lease lasts its life (500 ms at a 60 s window), no
	// longer: then it is refused too.
	time.Sleep(550 * time.Millisecond)
	if g := reserve(t, rc, "c-after", "m", 1); g.OK || g.Reason != "paused" {
		t.Fatalf("a process that held a lease, after its life: %+v, want refused (paused)", g)
	}
	// The dropped lease's unspent requests went back with a's next statement.
	if got := count(t, ctx, a, `SELECT sum(requests)::int FROM kern_rate_grant`); got != 4+2 {
		t.Fatalf("the window counts %d requests; want the 4 + 2 spent before the pause", got)
	}
}

// TestRateLimitDeadLeaseHolderAgesOut: a process that dies holding a lease
// (its handle closed, its unspent part never given back) keeps all of it
// counted until it leaves the window, no longer: then the budget is whole.
// Nothing here depends on the machine's speed: the window is an hour (the
// exact grants beside the lease all fall in it however slow they are), and
// the window's passing is Postgres's own dates moved back a window, not a
// sleep. A lease answered after its life (500 ms) is given back and its
// call takes the exact path; that attempt is set aside and another model
// tried.
func TestRateLimitDeadLeaseHolderAgesOut(t *testing.T) {
	const budget, window = 40, time.Hour // leases of at most 2, life 500 ms
	url := kerntest.DatabaseURL(t)
	live, _, _ := openCounted(t, url)
	dead, _, _ := openCounted(t, url)
	kill := dead.Pool().Close  // it dies: no Close gives its lease back
	db.SetLeaseSettle(dead, 0) // nor does the settle timer
	rd := dead.RateLimiter(engine.Key{})
	ctx := kerntest.Context(t, 60*time.Second)
	model := ""
	for attempt := 0; model == ""; attempt++ {
		if attempt == 10 {
			t.Fatal("no lease in 10 attempts: every lease statement took longer than the lease's life (500 ms)")
		}
		m := fmt.Sprintf("m%d", attempt)
		setLimit(t, live, run.RateLimit{Model: m, RequestsPerMinute: budget}, window)
		// A lease of 2 for the one call, however fast the machine is (a
		// lease is otherwise sized by how the last one was used).
		db.SetNextLease(dead, m, 2)
		if g := reserve(t, rd, "d1", m, 1); g.Lease { // a lease of 2, one spent
			model = m
		}
	}
	if got := count(t, ctx, live, `SELECT coalesce(sum(requests), 0) FROM kern_rate_grant WHERE model = $1`, model); got != 2 {
		t.Fatalf("the dead process holds %d requests; want its lease of 2", got)
	}
	kill()
	rl := live.RateLimiter(engine.Key{})
	exact := func(id string) engine.Grant {
		g, err := rl.Reserve(ctx, engine.Reservation{Fence: engine.Fence{RunID: id, Execution: 1}, Model: model, Tokens: 1, Waited: true})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	granted := 0
	for i := range budget {
		if exact(fmt.Sprintf("x%d", i)).OK {
			granted++
		}
	}
	if granted != budget-2 {
		t.Fatalf("%d granted beside the dead process's lease; want %d (its 2 requests, one unspent, count)", granted, budget-2)
	}
	for i := range budget {
		_ = rl.Withdraw(ctx, engine.Fence{RunID: fmt.Sprintf("x%d", i), Execution: 1}, model)
	}
	// A window and a lease's life pass, as far as the grants' dates go.
	if _, err := live.Pool().Exec(ctx, `UPDATE kern_rate_grant SET at = at - interval '1 hour 1 second' WHERE model = $1`, model); err != nil {
		t.Fatal(err)
	}
	granted = 0
	for i := range budget + 1 {
		if exact(fmt.Sprintf("y%d", i)).OK {
			granted++
		}
	}
	if granted != budget {
		t.Fatalf("after the window %d granted; want the whole budget, %d", granted, budget)
	}
	if got := count(t, ctx, live, `SELECT count(*) FROM kern_rate_grant WHERE model = $1 AND requests <> 1`, model); got != 0 {
		t.Fatalf("%d of the dead process's leases are still on file", got)
	}
}

// TestRateLimitLeasesKeepTheWindow: four processes, eight callers each,
// ask as fast as they can for a budget of 300 per 3 s window, through
// leases (up to 15 each, 150 ms lives) and, near the budget, the exact
// path. No window of calls holds more than the budget; both paths were
// used. A call from a lease is timed when it is granted, by this process's
// clock; an exact grant by the time Postgres gave it (the same host's
// clock), not when its answer arrived, which a loaded machine can delay by
// more than any margin. The windows checked are 10 ms shorter.
func TestRateLimitLeasesKeepTheWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for two windows of 3 s")
	}
	const budget, window = 300, 3 * time.Second
	url := kerntest.DatabaseURL(t)
	var handles []*db.DB
	for range 4 {
		d, _, _ := openCounted(t, url)
		handles = append(handles, d)
	}
	setLimit(t, handles[0], run.RateLimit{Model: "m", RequestsPerMinute: budget}, window)
	var (
		mu            sync.Mutex
		calls         []fakellm.Arrival
		leased, exact int
		wg            sync.WaitGroup
	)
	end := time.Now().Add(2*window + 500*time.Millisecond)
	for h, d := range handles {
		rl := d.RateLimiter(engine.Key{})
		for c := range 8 {
			wg.Go(func() {
				r := engine.Reservation{Fence: engine.Fence{Execution: 1}, Model: "m", Tokens: 1}
				for i := 0; time.Now().Before(end); i++ {
					if !r.Waited {
						r.RunID = fmt.Sprintf("h%d-c%d-%d", h, c, i)
					}
					g, err := rl.Reserve(context.Background(), r)
					if err != nil {
						t.Error(err)
						return
					}
					if !g.OK {
						r.Waited = true
						time.Sleep(min(g.Wait, 50*time.Millisecond) + rand.N(3*time.Millisecond))
						continue
					}
					at := time.Now()
					if !g.Lease {
						// An exact grant counts from when Postgres dated
						// it; its return can come much later on a loaded
						// machine, which says nothing of the budget.
						if err := d.Pool().QueryRow(context.Background(), `SELECT at FROM kern_rate_grant WHERE id = $1`, g.ID).Scan(&at); err != nil {
							t.Error(err)
							return
						}
					}
					mu.Lock()
					calls = append(calls, fakellm.Arrival{At: at})
					if g.Lease {
						leased++
					} else {
						exact++
					}
					mu.Unlock()
					r.Waited = false
				}
				if r.Waited {
					_ = rl.Withdraw(context.Background(), r.Fence, "m")
				}
			})
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(calls, func(a, b fakellm.Arrival) int { return a.At.Compare(b.At) })
	if got := fakellm.MaxInWindow(calls, window-10*time.Millisecond); got > budget {
		t.Fatalf("%d calls started in one window; the budget is %d (%d leased, %d exact)", got, budget, leased, exact)
	}
	if leased == 0 || exact == 0 || len(calls) < budget+50 {
		t.Fatalf("%d calls, %d from leases, %d exact; want both paths, and calls in the second window", len(calls), leased, exact)
	}
}

// A process that stops cleanly (DB.Close) gives back what its lease did
// not spend at once: only what it spent still counts.
func TestRateLimitClosedLeaseHolderGivesItBack(t *testing.T) {
	const budget, window = 40, time.Hour // leases of at most 2; nothing leaves the window
	url := kerntest.DatabaseURL(t)
	live, _, _ := openCounted(t, url)
	closing, _, closeIt := openCounted(t, url)
	db.SetLeaseSettle(closing, 0) // only Close gives the lease back
	setLimit(t, live, run.RateLimit{Model: "m", RequestsPerMinute: budget}, window)
	rc := closing.RateLimiter(engine.Key{})
	db.SetNextLease(closing, "m", 2)                 // whatever the machine's speed
	if g := reserve(t, rc, "c1", "m", 1); !g.Lease { // a lease of 2, one spent
		t.Fatalf("%+v, want a lease", g)
	}
	closeIt()
	ctx := kerntest.Context(t, 20*time.Second)
	rl := live.RateLimiter(engine.Key{})
	granted := 0
	for i := range budget {
		g, err := rl.Reserve(ctx, engine.Reservation{Fence: engine.Fence{RunID: fmt.Sprintf("x%d", i), Execution: 1}, Model: "m", Tokens: 1, Waited: true})
		if err != nil {
			t.Fatal(err)
		}
		if g.OK {
			granted++
		}
	}
	if granted != budget-1 {
		t.Fatalf("%d granted after the other process closed; want %d (its spent request counts, the unspent one is back)", granted, budget-1)
	}
}
