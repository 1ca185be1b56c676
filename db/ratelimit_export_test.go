package db

import "time"

// SetLeaseSettle sets how long d's lease deltas may wait for a statement to
// take them along (ratelimit_lease.go); 0 turns the settle timer off, so
// deltas reach the database only with the next lease or reservation, or
// never (a process that dies). Call it before d reserves anything.
func SetLeaseSettle(d *DB, delay time.Duration) {
	b := &d.rate().leases
	b.mu.Lock()
	defer b.mu.Unlock()
	if delay == 0 {
		b.settleDelay, b.fire = time.Hour, func() {}
		return
	}
	b.settleDelay = delay
}

// SetNextLease sets the size, in requests, of d's next lease of model, so a
// test does not depend on how fast its calls came (a lease that expired
// fully spent sizes the next by its use, one that ran out early doubles).
func SetNextLease(d *DB, model string, n int) {
	b := &d.rate().leases
	b.mu.Lock()
	defer b.mu.Unlock()
	b.model(model).nextN = n
}
