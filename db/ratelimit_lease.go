package db

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

// Budget leases: a limit that does not bind, nearly free
//
// Asking the database before every call serialises every batch of the
// fleet on the model's row lock. So while a budget is far from binding, a
// process leases a chunk of it in one statement (kern_rate_lease,
// migrations/015) and spends it locally, per model, with no round trip per
// call; the exact per-call path (kern_rate_reserve) is kept for when the
// budget is close to binding, where order and run.throttled matter.
//
// Window. A lease is a grant of n requests and t tokens, decided under the
// model's row lock against the same totals as every per-call grant, and
// counted in full from the moment it is granted. Its holder may start calls
// from it only during its life (LEAST(500 ms, window/20)), measured on the
// holder's monotonic clock from before it sent the statement, so the life
// it sees never ends later than the one Postgres dated; the grant row is
// dated at the end of that life (Postgres's clock_timestamp() + life), so it
// leaves the window a whole window after the last call it may start. Hence
// every call started from a lease is counted during the whole window that
// follows it, and no window holds more than the budget, exactly as for
// per-call grants. A lease costs a window + life of budget rather than a
// window: the price of spending it without asking (a 120th at 60 s).
//
// Size. A lease is what the process used of its last one when that one
// expired unused in part, or twice the last one when it ran out early (so
// a busy process doubles up to its rate in a life), at least one request;
// the database caps it at a 20th of each budget. Tokens: the asking call's
// estimate plus the others' at the process's recent average estimate, with
// a quarter more. A 20th of a budget under two calls ('small') is not
// leased at all: the model takes the exact path.
//
// Close to binding. A lease is granted in full or refused, never in part:
// refused when it does not fit, when runs wait for the budget (a lease must
// not overtake them: the queue keeps its order), and while the model is
// paused. A refused process takes the exact path for the model for a second
// (leaseRetry), then asks again; a reservation that waited always takes the
// exact path. So near the budget everything is as before: waiter rows,
// priority then submit order, run.throttled.
//
// Deltas (give-back and reconciliation). When a lease ends — spent, or its
// life over — what it did not spend is given back: a negative delta on its
// grant, so that budget frees at once rather than a window later (it would
// otherwise hold other processes back near the budget). A call's reported
// tokens minus its estimate is a delta too. Deltas ride the process's next
// statement on the model (a lease, or an exact reservation batch); when
// none comes within settleDelay (250 ms), or a lease's life ends with no
// statement taking it back, one kern_rate_settle statement writes them. A
// delta of a grant that has left the window changes nothing. A delta that
// cannot be written (Postgres away, in doubt) is dropped, never sent twice:
// the grant then counts what it was leased (more than was spent), or the
// estimates (less than was reported), until it leaves the window.
//
// A process that dies holding a lease: its grant is a committed row, so all
// of it — spent or not — counts until it leaves the window (life + window
// after it was granted); its deltas, never sent, are lost. Nothing leaks
// past that. DB.Close gives back what its leases did not spend and writes
// the pending deltas (closeLeases), so a process that stops cleanly holds
// nobody back.
//
// Pause. A 429's Pause drops the process's lease of the model before the
// pause is written, and the process takes the exact path (which reads
// paused_until under the lock) for leaseRetry; an answer to a lease asked
// before the drop is given back whole. Other processes may go on spending
// a lease granted before the pause for the rest of its life (≤ 500 ms) or
// until their own first 429, whichever comes first; no lease is granted
// while paused_until is ahead.

const (
	// leaseRetry is how long a process takes the exact path for a model
	// after a lease of it was refused or a pause dropped it.
	leaseRetry = time.Second
	// defaultSettleDelay is the longest a delta waits for a statement to
	// take it along before one is sent for it.
	defaultSettleDelay = 250 * time.Millisecond
	// maxLeaseRequests bounds the requests a process asks for, as the
	// database does (which also caps them at a 20th of a request budget):
	// 131,072 calls a second from one process at a 500 ms life is plenty,
	// and a token-only budget's totals stay far from integer overflow.
	maxLeaseRequests = 1 << 16
)

// leaseBook is a DB's leases, per model, and the deltas not written yet.
type leaseBook struct {
	mu          sync.Mutex
	models      map[string]*modelLease
	timer       *time.Timer
	timerAt     time.Time // when timer fires; zero when not armed
	settleDelay time.Duration
	fire        func() // the timer's: rateState.settle
	closed      bool   // by DB.Close: the timer is never armed again
}

type modelLease struct {
	cur        *lease
	asking     *leaseAsk // the lease statement in flight, nil when none
	gen        uint64    // bumped by drop: an answer to an older ask is given back
	exactUntil time.Time // until then, the exact path
	nextN      int       // requests of the next lease
	est        float64   // recent average estimate of a call's tokens
	tpm        int       // the token budget, as last seen (0: none)
	tpmAt      time.Time // when; a figure older than leaseRetry is asked again
	pending    map[int64]*delta
	since      time.Time // when pending got its first delta
}

type lease struct {
	id           int64
	n, t         int // granted
	usedN, usedT int // spent
	ends         time.Time
	tokenLimited bool
	rpm, tpm     int
}

type delta struct{ req, tok int64 }

// leaseAsk is one lease statement; the callers waiting for it read its
// outcome once done is closed.
type leaseAsk struct {
	done    chan struct{}
	granted bool
	none    bool // the model has no limit any more
}

// deltas are rows for kern_rate_apply: grant ids, their models, requests
// and tokens to add.
type deltas struct {
	ids    []int64
	models []string
	req    []int32
	tok    []int32
}

func (b *leaseBook) model(name string) *modelLease {
	if b.models == nil {
		b.models = map[string]*modelLease{}
	}
	m := b.models[name]
	if m == nil {
		m = &modelLease{nextN: 1}
		b.models[name] = m
	}
	return m
}

// fromLease serves r from the process's lease of r.Model, asking for a new
// one when it has none left. ok false: take the exact path.
func (s *rateState) fromLease(ctx context.Context, r engine.Reservation) (g engine.Grant, ok bool, err error) {
	tokens := min(max(r.Tokens, 0), 1<<30)
	b := &s.leases
	for {
		b.mu.Lock()
		m := b.model(r.Model)
		now := time.Now()
		if l := m.cur; l != nil {
			if now.Before(l.ends) && l.usedN < l.n && (!l.tokenLimited || l.usedT+tokens <= l.t) {
				l.usedN++
				if l.tokenLimited {
					l.usedT += tokens
				}
				if m.est == 0 {
					m.est = float64(tokens)
				}
				m.est = 0.9*m.est + 0.1*float64(tokens)
				b.mu.Unlock()
				return engine.Grant{OK: true, ID: l.id, Model: r.Model, Lease: true, Tokens: tokens,
					RequestsPerMinute: l.rpm, TokensPerMinute: l.tpm, TokenLimited: l.tokenLimited}, true, nil
			}
			b.retire(r.Model, m, now, true)
		}
		// A call too large for a lease goes alone on the exact path; the
		// process's other calls go on leasing.
		if now.Before(m.exactUntil) || (m.tpm > 0 && m.tpm/20 < 2*max(tokens, 1) && now.Sub(m.tpmAt) < leaseRetry) {
			b.mu.Unlock()
			return engine.Grant{}, false, nil
		}
		a := m.asking
		if a == nil {
			a = s.askLease(r.Model, m, tokens, now)
		}
		b.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return engine.Grant{}, false, ctx.Err()
		}
		switch {
		case a.none:
			s.invalidate()
			return engine.Grant{OK: true, Model: r.Model}, true, nil
		case !a.granted:
			return engine.Grant{}, false, nil
		}
		// Granted: spend it (or, if the callers that waited with this one
		// took it all, ask again for a larger one).
	}
}

// askLease sends a lease statement for model (b.mu held); need is the
// asking call's estimate.
func (s *rateState) askLease(model string, m *modelLease, need int, now time.Time) *leaseAsk {
	a := &leaseAsk{done: make(chan struct{})}
	m.asking = a
	n := min(max(m.nextN, 1), maxLeaseRequests)
	est := m.est
	if est <= 0 {
		est = float64(need)
	}
	t := need + int(min(math.Ceil(float64(n-1)*est*1.25), 1<<30))
	t = min(t, 1<<30)
	d := s.leases.take(model, m)
	go s.lease(a, model, m.gen, n, t, need, d, now)
	return a
}

// lease runs one lease statement and records its answer. It runs on its
// own, with a deadline of its own: the callers waiting for it may give up,
// but its answer must be known (a grant not recorded would only age out).
func (s *rateState) lease(a *leaseAsk, model string, gen uint64, n, t, need int, d deltas, sent time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	var (
		granted                  bool
		id, waitMS               int64
		gn, gt, lifeMS, rpm, tpm int32
		reason                   string
	)
	err := s.d.pool.QueryRow(ctx, sqlLease, model, int32(n), int32(t), int32(need), d.ids, d.models, d.req, d.tok).
		Scan(&granted, &id, &gn, &gt, &lifeMS, &waitMS, &reason, &rpm, &tpm)
	b := &s.leases
	b.mu.Lock()
	defer b.mu.Unlock()
	defer close(a.done)
	m := b.model(model)
	m.asking = nil
	now := time.Now()
	switch {
	case err != nil:
		// Postgres away, or the statement in doubt: its deltas are
		// dropped (see "Deltas"); the exact path reports the trouble.
		m.exactUntil = now.Add(leaseRetry)
		return
	case reason == "none":
		a.none = true
		return
	}
	m.tpm, m.tpmAt = int(tpm), now
	if !granted {
		if reason != "small" || int(tpm) == 0 || int(tpm)/20 >= 2*max(need, 1) {
			m.exactUntil = sent.Add(leaseRetry)
		} // else: only this call was too large for a lease
		return
	}
	l := &lease{id: id, n: int(gn), t: int(gt), ends: sent.Add(time.Duration(lifeMS) * time.Millisecond),
		tokenLimited: tpm > 0, rpm: int(rpm), tpm: int(tpm)}
	if m.gen != gen || !now.Before(l.ends) {
		// Dropped meanwhile (a pause, a new budget), or already too old to
		// spend: all of it goes back.
		b.addDelta(model, m, id, -int64(gn), -int64(gt), now)
		return
	}
	if m.cur != nil {
		b.retire(model, m, now, false)
	}
	m.cur = l
	a.granted = true
	b.arm(l.ends) // its end gives back what is left, if no call does first
}

// retire ends m's lease (b.mu held): what it did not spend becomes a
// delta, and, with adapt, the next lease is sized by this one's use.
func (b *leaseBook) retire(model string, m *modelLease, now time.Time, adapt bool) {
	l := m.cur
	m.cur = nil
	dn, dt := int64(l.usedN-l.n), int64(0)
	if l.tokenLimited {
		dt = int64(l.usedT - l.t)
	}
	if dn != 0 || dt != 0 {
		b.addDelta(model, m, l.id, dn, dt, now)
	}
	if !adapt {
		return
	}
	if now.Before(l.ends) { // ran out early: the process uses more
		m.nextN = min(2*l.n, maxLeaseRequests)
	} else {
		m.nextN = max(l.usedN, 1)
	}
}

// drop ends the process's lease of model at once (b.mu not held); exact
// keeps the process on the exact path for leaseRetry (a pause).
func (b *leaseBook) drop(model string, exact bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for name, m := range b.models {
		if model != "" && name != model {
			continue
		}
		m.gen++
		if m.cur != nil {
			b.retire(name, m, now, false)
		}
		if exact {
			m.exactUntil = now.Add(leaseRetry)
		}
	}
}

// saw records a model's token budget as an exact reservation answered it.
func (b *leaseBook) saw(model string, tpm int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.model(model)
	m.tpm, m.tpmAt = tpm, time.Now()
}

// reconcile notes a lease call's reported tokens, to be written later.
func (b *leaseBook) reconcile(g engine.Grant, tokens int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := int64(min(max(tokens, 0), 1<<30)) - int64(g.Tokens)
	if d != 0 {
		b.addDelta(g.Model, b.model(g.Model), g.ID, 0, d, time.Now())
	}
}

func (b *leaseBook) addDelta(model string, m *modelLease, id, req, tok int64, now time.Time) {
	if m.pending == nil {
		m.pending = map[int64]*delta{}
	}
	p := m.pending[id]
	if p == nil {
		p = &delta{}
		m.pending[id] = p
	}
	p.req += req
	p.tok += tok
	if m.since.IsZero() {
		m.since = now
		b.arm(now.Add(b.settleDelay))
	}
}

// take hands over model's pending deltas to a statement (b.mu held).
func (b *leaseBook) take(model string, m *modelLease) deltas {
	var d deltas
	d.add(model, m.pending)
	m.pending, m.since = nil, time.Time{}
	return d
}

// takeModels is take for the models of an exact reservation batch.
func (b *leaseBook) takeModels(models []string) deltas {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d deltas
	for _, name := range models {
		if m := b.models[name]; m != nil && len(m.pending) > 0 {
			d.add(name, m.pending)
			m.pending, m.since = nil, time.Time{}
		}
	}
	return d
}

func (d *deltas) add(model string, p map[int64]*delta) {
	clamp := func(v int64) int32 { return int32(min(max(v, math.MinInt32), math.MaxInt32)) }
	for id, x := range p {
		d.ids = append(d.ids, id)
		d.models = append(d.models, model)
		d.req = append(d.req, clamp(x.req))
		d.tok = append(d.tok, clamp(x.tok))
	}
}

// arm makes the settle timer fire by at (b.mu held).
func (b *leaseBook) arm(at time.Time) {
	if b.closed || !b.timerAt.IsZero() && !at.Before(b.timerAt) {
		return
	}
	b.timerAt = at
	if b.timer == nil {
		b.timer = time.AfterFunc(time.Until(at), b.fire)
	} else {
		b.timer.Reset(time.Until(at))
	}
}

// settle is the timer: it ends the leases whose life is over and writes
// every pending delta, in one statement (best effort, see "Deltas").
func (s *rateState) settle() {
	b := &s.leases
	b.mu.Lock()
	b.timerAt = time.Time{}
	now := time.Now()
	var d deltas
	var next time.Time
	for name, m := range b.models {
		if m.cur != nil && !now.Before(m.cur.ends) {
			b.retire(name, m, now, true)
		}
		if len(m.pending) > 0 {
			d.add(name, m.pending)
			m.pending, m.since = nil, time.Time{}
		}
		if m.cur != nil && (next.IsZero() || m.cur.ends.Before(next)) {
			next = m.cur.ends
		}
	}
	if !next.IsZero() {
		b.arm(next)
	}
	b.mu.Unlock()
	if len(d.ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	_, _ = s.d.pool.Exec(ctx, sqlSettle, d.ids, d.models, d.req, d.tok) // dropped on failure: see "Deltas"
}

// closeLeases is DB.Close's part: it ends every lease, stops the settle
// timer for good and writes what the leases did not spend and the pending
// deltas, in one statement with a short deadline of its own (best effort,
// as settle).
func (s *rateState) closeLeases() {
	b := &s.leases
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timerAt = time.Time{}
	now := time.Now()
	var d deltas
	for name, m := range b.models {
		m.gen++ // an answer still in flight is given back whole, by nobody: it ages out
		if m.cur != nil {
			b.retire(name, m, now, false)
		}
		if len(m.pending) > 0 {
			d.add(name, m.pending)
			m.pending, m.since = nil, time.Time{}
		}
	}
	b.mu.Unlock()
	if len(d.ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeSettleTimeout)
	defer cancel()
	_, _ = s.d.pool.Exec(ctx, sqlSettle, d.ids, d.models, d.req, d.tok)
}

// closeSettleTimeout bounds closeLeases' statement: Close must not hang
// on a Postgres that is away.
const closeSettleTimeout = 2 * time.Second
