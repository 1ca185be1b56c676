package db

import "github.com/riverqueue/river"

// QueueName is the River queue kern's runs are worked from.
const QueueName = "kern"

// RunJobArgs is the River job of a background run. It carries ids only:
// everything else is in the run's row, the one source of truth.
type RunJobArgs struct {
	RunID     string `json:"run_id"`
	AgentName string `json:"agent"`
}

// Kind implements river.JobArgs.
func (RunJobArgs) Kind() string { return "kern_run" }

// InsertOpts keeps every kern job on kern's queue, whoever inserts it.
func (RunJobArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueName}
}
