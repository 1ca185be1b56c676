package engine

import "time"

// FiredSchedules is what one Store.FireSchedules pass did.
type FiredSchedules struct {
	// Runs are the ids of the runs submitted, one per schedule fired.
	Runs []string
	// Next is how long, by Postgres's clock, until the earliest due time of
	// the agents' schedules that are not paused; HasNext is false when
	// there is none. Next is 0 or less when some are due already (more
	// than the pass's limit, or locked by another worker's pass).
	Next    time.Duration
	HasNext bool
}
