package agent

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/run"
)

// RunOption configures one Run call.
type RunOption func(*runConfig)

type runConfig struct {
	background bool
	runID      string
	runIDSet   bool
	sessionID  string
	name       string
	metadata   map[string]any
	timeout    time.Duration
	onEvent    func(run.Event)
	idemKey    string
	tenant     string
	// waitTimeout: WithWaitTimeout.
	waitTimeout time.Duration
	// Operator options: WithConcurrencyKey, WithPriority, WithStartAt and
	// WithDelay, WithTx, WithWebhook.
	concurrencyKey    string
	concurrencyKeySet bool
	priority          int
	prioritySet       bool
	startAt           time.Time
	startAtSet        bool
	delay             time.Duration
	delaySet          bool
	tx                pgx.Tx
	txSet             bool
	webhookURL        string
	webhookSet        bool
}

// Background(true) makes Run return at once with the run pending; a worker
// (agent.NewWorker, in any process on the same database) executes it.
func Background(on bool) RunOption { return func(c *runConfig) { c.background = on } }

// WithRunID sets the run's id (default: a new UUIDv7). An id that already
// has a run makes Run fail with run.ErrAlreadyExists; an empty or malformed
// one with run.ErrInvalidArgument.
func WithRunID(id string) RunOption {
	return func(c *runConfig) { c.runID, c.runIDSet = id, true }
}

// WithSessionID groups the run with others of the same conversation.
func WithSessionID(id string) RunOption { return func(c *runConfig) { c.sessionID = id } }

// WithName gives the run a human-readable name.
func WithName(name string) RunOption { return func(c *runConfig) { c.name = name } }

// WithMetadata attaches JSON-encodable data to the run.
func WithMetadata(m map[string]any) RunOption { return func(c *runConfig) { c.metadata = m } }

// WithTimeout bounds the run's execution (default: the worker's
// DefaultTimeout). A timed-out run ends as error.
func WithTimeout(d time.Duration) RunOption { return func(c *runConfig) { c.timeout = d } }

// OnEvent receives the live events of a foreground run, as they are
// committed: the same events, with the same seqs, that Events replays later.
// fn is called from one goroutine, in seq order, and every call has
// returned before Run does. It is ignored for a background run: follow
// those with Events.
func OnEvent(fn func(run.Event)) RunOption { return func(c *runConfig) { c.onEvent = fn } }

// WithIdempotencyKey makes a second submit with the same key, for the same
// agent, return the existing run (as it is now) instead of creating one —
// across processes and concurrent submits. Use it to make a retried HTTP
// request or a redelivered message submit once.
func WithIdempotencyKey(key string) RunOption { return func(c *runConfig) { c.idemKey = key } }

// WithTenant makes the run a tenant's (run.Output.TenantID): the HTTP API's
// keys of that tenant see it (package server), other tenants' keys do not,
// and its idempotency key is the tenant's own. Default: the operator's own
// runs (no tenant).
func WithTenant(id string) RunOption { return func(c *runConfig) { c.tenant = id } }

// WithWaitTimeout bounds how long the run may wait, each time it waits,
// for answers to its tool calls (Tool.NeedsApproval, Tool.External):
// after d the run ends as error ("waited too long for an answer (d)").
// Default 24h (db.DefaultWaitTimeout). The time waiting does not count
// against WithTimeout, which bounds each execution.
func WithWaitTimeout(d time.Duration) RunOption { return func(c *runConfig) { c.waitTimeout = d } }

// WithConcurrencyKey puts a background run under its workers' per-key
// limit (WorkerConfig.MaxRunsPerKey): at most that many runs of key run at
// once, across every worker; the others stay pending and start in submit
// order. Use it for one live run per session or per user. An empty key, or
// one on a foreground run, is run.ErrInvalidArgument.
func WithConcurrencyKey(key string) RunOption {
	return func(c *runConfig) { c.concurrencyKey, c.concurrencyKeySet = key, true }
}

// WithPriority sets a background run's priority, River's: 1 runs first …
// 4 last; default 2. It orders runs waiting for a worker, not running ones,
// and holds for the whole run: after an answer or a rescue too.
// Outside 1..4, or on a foreground run, it is run.ErrInvalidArgument.
func WithPriority(p int) RunOption {
	return func(c *runConfig) { c.priority, c.prioritySet = p, true }
}

// WithStartAt keeps a background run pending until t (its River job's
// ScheduledAt); a CancelRun before then ends it without a model call. A
// zero t, or a foreground run, is run.ErrInvalidArgument.
func WithStartAt(t time.Time) RunOption {
	return func(c *runConfig) { c.startAt, c.startAtSet, c.delaySet = t, true, false }
}

// WithDelay is WithStartAt(now + d). A negative d is run.ErrInvalidArgument.
func WithDelay(d time.Duration) RunOption {
	return func(c *runConfig) { c.delay, c.delaySet, c.startAtSet = d, true, false }
}

// WithTx submits a background run inside the caller's transaction: the row
// and its job commit or roll back with tx, and no worker sees the run
// before the commit. tx must be on the agent's database (the same Postgres
// database as its DB). Such a submit is not batched with others; a
// duplicate run id or idempotency key leaves tx usable (a savepoint). A
// foreground run with WithTx is run.ErrInvalidArgument: it could not start
// before the commit.
func WithTx(tx pgx.Tx) RunOption { return func(c *runConfig) { c.tx, c.txSet = tx, true } }

// WithWebhook posts the final run, signed (WorkerConfig.WebhookSecret), to
// url: an absolute http or https URL, at most 2 KiB, else
// run.ErrInvalidArgument. A tenant's run (WithTenant) is delivered only to
// a public address, checked when the worker connects, unless
// WorkerConfig.AllowPrivateWebhooks.
func WithWebhook(url string) RunOption {
	return func(c *runConfig) { c.webhookURL, c.webhookSet = url, true }
}

// startTime is when the run may start, zero for now.
func (c *runConfig) startTime() time.Time {
	switch {
	case c.startAtSet:
		return c.startAt
	case c.delaySet && c.delay > 0:
		return time.Now().Add(c.delay)
	}
	return time.Time{}
}

func (c *runConfig) validate() error {
	if c.timeout < 0 {
		return fmt.Errorf("kern: %w: timeout %v is negative", run.ErrInvalidArgument, c.timeout)
	}
	if c.waitTimeout < 0 {
		return fmt.Errorf("kern: %w: wait timeout %v is negative", run.ErrInvalidArgument, c.waitTimeout)
	}
	return c.validateOperator()
}

// validateOperator checks the operator options (see their docs).
func (c *runConfig) validateOperator() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("kern: %w: "+format, append([]any{run.ErrInvalidArgument}, args...)...)
	}
	switch {
	case c.concurrencyKeySet && c.concurrencyKey == "":
		return bad("WithConcurrencyKey: the key is empty")
	case c.prioritySet && (c.priority < 1 || c.priority > 4):
		return bad("WithPriority(%d): priority is 1 (first) … 4 (last)", c.priority)
	case c.startAtSet && c.startAt.IsZero():
		return bad("WithStartAt: the time is zero")
	case c.delaySet && c.delay < 0:
		return bad("WithDelay(%v): the delay is negative", c.delay)
	case c.txSet && c.tx == nil:
		return bad("WithTx: the transaction is nil")
	case c.webhookSet && c.webhookURL == "":
		return bad("WithWebhook: the URL is empty")
	}
	if !c.background {
		for _, o := range []struct {
			set  bool
			name string
		}{{c.txSet, "WithTx"}, {c.concurrencyKeySet, "WithConcurrencyKey"}, {c.prioritySet, "WithPriority"},
			{c.startAtSet, "WithStartAt"}, {c.delaySet, "WithDelay"}} {
			if o.set {
				return bad("%s needs Background(true): a foreground run executes in the caller, not a worker", o.name)
			}
		}
	}
	return nil
}
