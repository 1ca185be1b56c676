package engine

import (
	"time"

	"github.com/riverqueue/river"
)

// CompleteJobArgs is the River job that calls a worker's OnComplete for one
// terminal run. Inserted by the outbox drain in the transaction that
// deletes the run's outbox row, so the callback is at least once: River
// retries the job after a failure or a crash.
type CompleteJobArgs struct {
	RunID     string `json:"run_id"`
	AgentName string `json:"agent"`
}

// Kind implements river.JobArgs.
func (CompleteJobArgs) Kind() string { return "kern_complete" }

// CompleteMaxAttempts bounds the retries of an OnComplete that panics.
const CompleteMaxAttempts = 5

// InsertOpts puts the job on the agent's completion queue, which only
// workers of the agent that have an OnComplete work.
func (a CompleteJobArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: CompleteQueueFor(a.AgentName), MaxAttempts: CompleteMaxAttempts}
}

// WebhookJobArgs is the River job that POSTs one terminal run to its
// webhook URL (the URL is read from the run's row, the one source of truth).
type WebhookJobArgs struct {
	RunID     string `json:"run_id"`
	AgentName string `json:"agent"`
}

// Kind implements river.JobArgs.
func (WebhookJobArgs) Kind() string { return "kern_webhook" }

// WebhookMaxAttempts is how many times a webhook is tried before its
// delivery is "failed".
const WebhookMaxAttempts = 10

// InsertOpts puts the job on the agent's webhook queue, which every worker
// of the agent works.
func (a WebhookJobArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: WebhookQueueFor(a.AgentName), MaxAttempts: WebhookMaxAttempts}
}

// CompleteQueueFor is the River queue of an agent's OnComplete jobs:
// QueueFor's name (at most 54 bytes) and "_done", within River's 64.
func CompleteQueueFor(agentName string) string { return QueueFor(agentName) + "_done" }

// WebhookQueueFor is the River queue of an agent's webhook deliveries.
func WebhookQueueFor(agentName string) string { return QueueFor(agentName) + "_hook" }

// OutboxDrain is one pass over the completion outbox of some agents; see
// Store.DrainOutbox.
type OutboxDrain struct {
	Agents []string
	// Complete: the drainer calls OnComplete, so completion rows become
	// kern_complete jobs. Without it, completion rows are left to a worker
	// that does for DropAfter, and then deleted.
	Complete  bool
	DropAfter time.Duration
	Limit     int // rows of each kind per pass; default 500
	// WebhookMaxAttempts overrides WebhookMaxAttempts when positive.
	WebhookMaxAttempts int
}

// OutboxResult says what a drain pass did.
type OutboxResult struct {
	Completions, Webhooks, Dropped int
}
