// Package engine is the executing side of kern's storage: the statements a
// worker (or a foreground Run) makes while it executes a run — claim it,
// stream content into it, heartbeat, finish, retry, hand back — and the
// rescue of runs whose worker died.
//
// The SQL itself stays in package db, next to the rest; db implements
// [Store] with an unexported type and hands it out only through
// db.DB.Engine, which takes a [Key]. Key can be named only inside this
// module (this package is internal), so applications see db's API and
// nothing of the worker's: they cannot start, fence or finish a run by hand.
// This is the same split River makes between its client and its internal
// executors.
package engine

import (
	"context"
	"errors"
	"time"

	"github.com/kern-go/kern/run"
)

// ErrKeyBusy is StartKeyedRun's answer for a run its concurrency key's
// limit holds back: it is still pending; put its job back for a moment.
var ErrKeyBusy = errors.New("kern: the run's concurrency key is at its limit, or an older run of the key comes first")

// Key unlocks db.DB.Engine. Its blank field makes the type impossible to
// spell outside this module: struct types with unexported fields from
// different packages are never identical.
type Key struct{ _ struct{} }

// Store is what an executing run needs from the database. Every write after
// StartRun is fenced by the [Fence] the claim returned: a write of an
// execution that no longer owns the run (cancelled, rescued, handed back)
// matches no row and returns run.ErrNotRunning.
type Store interface {
	// StartRun claims a pending run for a new execution. jobID is the River
	// job executing it (nil for a foreground run); only the run's current job
	// may start it. It returns run.ErrNotRunning when the run is not
	// startable (terminal, running elsewhere, or not this job's), and
	// run.ErrNotFound for no run.
	StartRun(ctx context.Context, runID string, jobID *int64) (*Claim, error)
	// ReadRun reads the run of key runID (RunKey), whatever its tenant:
	// run.ErrNotFound when there is none.
	ReadRun(ctx context.Context, runID string) (*run.Output, error)
	// StartKeyedRun is StartRun for a worker with a per-key limit
	// (WorkerConfig.MaxRunsPerKey, 0 for none): a run of a concurrency key
	// starts only when fewer than maxRunsPerKey runs of its key are running
	// and no older pending run of the key is due; otherwise it stays pending
	// and StartKeyedRun returns ErrKeyBusy.
	StartKeyedRun(ctx context.Context, runID string, jobID *int64, maxRunsPerKey int) (*Claim, error)
	// AppendContent persists a flushed chunk of the content being streamed,
	// with its content.delta event, which takes seq: the run's next event
	// seq. It is safe to repeat after an unknown outcome: the chunk applies
	// only after event seq-1, and a chunk already in the run returns nil.
	// run.ErrNotRunning means the execution lost the run.
	AppendContent(ctx context.Context, f Fence, seq int64, delta string) error
	// FinishRun writes a terminal status, with the unflushed tail.
	FinishRun(ctx context.Context, f Fence, fin Finish) error
	// Steps reads the run's stored transcript steps (see [Step]), in seq
	// order. A claim whose TranscriptSeq is above 1 has some.
	Steps(ctx context.Context, runID string) ([]Step, error)
	// WakeKey makes the first n due pending runs of the concurrency key of
	// run runID, which no longer runs, fetched at once: a slot of the key
	// may just have freed (see db's package doc, "Runs per concurrency
	// key"). A run without a key wakes nothing.
	WakeKey(ctx context.Context, runID string, n int) error
	// History reads the last n finished runs of session sessionID and agent
	// agentName made before run beforeRunID, of that run's tenant only,
	// oldest first: the conversation so far (Agent.HistoryRuns).
	History(ctx context.Context, sessionID, agentName, beforeRunID string, n int) ([]HistoryEntry, error)
	// DrainOutbox moves the completion outbox rows of p.Agents into River
	// jobs (kern_complete, kern_webhook), deleting the rows in the
	// transaction that inserts the jobs.
	DrainOutbox(ctx context.Context, p OutboxDrain) (OutboxResult, error)
	// WebhookURL is the webhook URL of a run, "" when it has none or is gone.
	WebhookURL(ctx context.Context, runID string) (string, error)
	// WebhookSecret is a tenant's own webhook signing secret, "" when it
	// has none.
	WebhookSecret(ctx context.Context, tenant string) (string, error)
	// RecordWebhook writes the outcome of a delivery attempt on the run.
	RecordWebhook(ctx context.Context, runID, status string, attempts int, lastError string) error
	// Retain is a retention pass: DeleteRuns of the terminal runs that
	// finished more than olderThan ago, pausing between its batches.
	Retain(ctx context.Context, olderThan, pause time.Duration) (int, error)
	// StoreTurn commits a finished model turn that asked for tool calls, as
	// transcript step t.Seq, with the unflushed tail of its content and its
	// events: a content.delta for a non-empty tail (at event seq), then one
	// tool.call per call. It empties the run's content (the turn's text
	// is in the step now) and reserves seqs t.Seq+1 … for the calls' results.
	// It applies only right after event seq-1 and transcript seq t.Seq-1, so
	// it is safe to repeat after an unknown outcome, like AppendContent.
	StoreTurn(ctx context.Context, f Fence, seq int64, t Turn) error
	// StoreToolResult commits one tool result at the transcript seq its
	// turn reserved for it, with its tool.result event at event seq; it
	// applies only right after event seq-1, and is safe to repeat.
	StoreToolResult(ctx context.Context, f Fence, seq int64, r ToolResult) error
	// WaitForAnswers moves the run to waiting on calls (tool calls of the
	// last stored turn that need an approval or an external result, with
	// no stored result), with its run.waiting event at event seq: the
	// execution ends, its job with it, and the run holds no worker until
	// every call is answered (db.DB.ApproveToolCall …), which puts it back
	// to pending with a new job. It applies only right after event seq-1,
	// and is safe to repeat.
	WaitForAnswers(ctx context.Context, f Fence, seq int64, calls []WaitCall) error
	// Heartbeat records that the execution is alive.
	Heartbeat(ctx context.Context, f Fence) error
	// RetryRun puts a failed execution's run back to pending, errMsg visible
	// until the next execution starts, with a run.retrying event.
	RetryRun(ctx context.Context, f Fence, errMsg string, delay time.Duration) error
	// ReleaseRun hands a running run back to pending (a stopping worker);
	// the execution does not count against the run's attempts.
	ReleaseRun(ctx context.Context, f Fence) error
	// HandOff moves a running run to agent to (a handoff): a new job on
	// that agent's queue, back to pending, with a run.handoff event; the
	// execution does not count against the run's attempts.
	HandOff(ctx context.Context, f Fence, to string) error
	// RescueStale takes runs from workers that stopped heartbeating,
	// re-queues runs whose job was lost, and ends as error runs that waited
	// for answers longer than their wait timeout; see db's package doc.
	RescueStale(ctx context.Context, staleAfter time.Duration, maxAttempts int) (Rescued, error)

	// RegisterWorker records (or renews) that worker id serves agents, until
	// ttl from now; UnregisterWorker removes it. A run of an agent no
	// registered worker serves reads as pending with an Error saying so.
	RegisterWorker(ctx context.Context, id string, agents []string, ttl time.Duration) error
	UnregisterWorker(ctx context.Context, id string) error

	// ForWorker is the store as worker id uses it: its claims record id on
	// the runs they start, so that the runs are rescued as soon as the
	// worker's session (OpenSession) ends.
	ForWorker(id string) Store
	// OpenSession opens the registered worker id's own Postgres session
	// and records it on the registration: while it is open the worker
	// counts as alive; once it ends, any worker's RescueStale rescues the
	// runs id claimed at once, without waiting for their heartbeat to go
	// stale. The caller keeps it open, checks it (Session.Check) and opens
	// another when it broke.
	OpenSession(ctx context.Context, id string) (Session, error)
	// DeadSessionRuns tells whether a running run's worker session has
	// ended: a cheap probe, made often, before a RescueStale.
	DeadSessionRuns(ctx context.Context) (bool, error)

	// FireSchedules fires the schedules of agents that are due (at most
	// limit of them): for each, in one transaction, the run (row and job)
	// and the schedule's next due time, under the schedule's row lock, so
	// a due time fires exactly once across all workers. See db's package
	// doc, "Recurring schedules".
	FireSchedules(ctx context.Context, agents []string, limit int) (FiredSchedules, error)

	// SubscribeCancel signals when a cancel request for the run may have
	// been recorded.
	SubscribeCancel(runID string) Subscription
	// SubscribeDone signals when the run may have reached a terminal status.
	SubscribeDone(runID string) Subscription
}

// Session is a worker's own Postgres session (Store.OpenSession).
type Session interface {
	// Check tells whether the session is still open (one round trip).
	Check(ctx context.Context) error
	// Close ends the session.
	Close(ctx context.Context) error
}

// Claim is a started execution.
type Claim struct {
	// Run is the run as it now is: running, or cancelled when a cancel
	// request was on file — then the model must not be called.
	Run *run.Output
	// Fence names this execution; every later write passes it.
	Fence Fence
	// EventSeq is the seq of the claim's own event (run.started): the
	// execution's first content chunk takes EventSeq+1.
	EventSeq int64
	// TranscriptSeq is the run's last stored (or reserved) transcript seq:
	// 1, the prompt, when no step is stored; above 1, the execution resumes
	// from Steps.
	TranscriptSeq int
}

// Step is one stored step of a run's transcript: a model turn that asked
// for tool calls (Role "assistant"), or a tool result (Role "tool"). Steps
// also hands out the calls that were approved while the run waited (Role
// "approved", Seq 0, ToolCallID the call's, first): they are due, and the
// execution makes them.
type Step struct {
	Seq        int
	Role       string
	Content    string
	ToolCalls  []run.ToolCall // assistant
	ToolCallID string         // tool: the call it answers
	ToolName   string         // tool
	Usage      Usage          // assistant: the turn's tokens
	At         time.Time
}

// Usage is the token count of one model turn.
type Usage struct {
	InputTokens, OutputTokens, TotalTokens int
}

// Turn is a finished model turn that asked for tool calls.
type Turn struct {
	Seq     int    // its transcript seq; its calls' results take Seq+1 …
	Content string // the whole turn's text
	Tail    string // the part of Content not flushed yet
	Calls   []run.ToolCall
	Usage   Usage
	// TTFT is the execution's time to its first token so far (0 for none
	// yet): the run keeps the first one recorded.
	TTFT time.Duration
	// Rejected, for a turn without Calls, is why its answer was not taken:
	// a final answer that does not match Agent.OutputSchema, stored so that
	// the model is not asked for it again. Its event is output.rejected
	// {"error"} in place of tool.call events.
	Rejected string
}

// ToolResult is one tool call's output.
type ToolResult struct {
	Seq    int // the transcript seq the call's turn reserved for it
	CallID string
	Name   string
	Output string
}

// WaitCall is a call the run waits on: Seq is the transcript seq its turn
// reserved for its result.
type WaitCall struct {
	Seq  int
	Call run.ToolCall
	// External: the call's tool is External, so its answer is a result
	// (or a rejection): an approval of it is refused.
	External bool
}

// Fence names one execution of a run: every write of it is conditional on
// the run still being owned by it.
type Fence struct {
	RunID     string
	Execution int
}

// Finish is the end of one execution.
type Finish struct {
	Status run.Status // completed, error or cancelled
	Tail   string     // content not flushed yet, appended in the same statement
	Error  string     // for StatusError
	// Metrics are the run's totals: tokens over every model turn (stored
	// steps included), ModelTurns and ToolCalls, and the execution's time to
	// first token (kept only when no earlier one recorded the run's).
	// Duration is not stored: the run's is from its first start to its end,
	// as Postgres dates them.
	Metrics run.Metrics
}

// Rescued counts what RescueStale did.
type Rescued struct {
	Requeued []string // back to pending with a new job, for another worker (a dead foreground run's too)
	Failed   []string // out of attempts: ended as error
	Expired  []string // waited for answers longer than their wait timeout: ended as error
	// HookJobs counts completion and webhook jobs of dead workers made
	// available again (see db's package doc, "Crash recovery").
	HookJobs int
}

// Subscription is a wake-up signal for one run: C receives (coalesced) when
// what it was made for may have happened; the receiver re-reads the row.
type Subscription interface {
	C() <-chan struct{}
	Close()
}

// HistoryEntry is one earlier run of a session, as History hands it to the
// executor: what was asked, and what was answered.
type HistoryEntry struct {
	Input   string     // the run's prompt
	Content string     // its final content; never empty
	Status  run.Status // run.StatusCompleted, or run.StatusCancelled for an answer cut short
}
