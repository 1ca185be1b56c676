package run

import "time"

// Schedule is a recurring run, stored in Postgres (db.DB.PutSchedule) and
// fired by the workers that serve its agent: at each due time, exactly one
// run of AgentName with Prompt, named Name, in SessionID, with Metadata.
type Schedule struct {
	Name string // unique per tenant; also the Name of every run it fires
	// TenantID is the tenant the schedule and the runs it fires belong to
	// (see Output.TenantID); empty for the operator's own.
	TenantID  string
	AgentName string
	Prompt    string
	// Cron is a standard 5-field cron expression ("0 7 * * *"), a
	// descriptor (@yearly, @monthly, @weekly, @daily, @midnight, @hourly),
	// or "@every <duration>" in whole seconds, at least 1s ("@every 30m").
	Cron string
	// Timezone is the IANA zone Cron is read in ("Europe/Paris"); empty
	// means UTC.
	Timezone  string
	SessionID string
	Metadata  map[string]any
	// Paused schedules do not fire; NextRunAt still says when they would.
	Paused bool
	// NextRunAt is the next due time (set by kern).
	NextRunAt time.Time
	// LastRunID is the run the schedule fired last, "" before the first
	// (set by kern; a replace keeps it).
	LastRunID string
	CreatedAt time.Time // set by kern
	UpdatedAt time.Time // set by kern: the last PutSchedule
}
