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
