package agent

import (
	"fmt"
	"time"

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
	// waitTimeout: WithWaitTimeout.
	waitTimeout time.Duration
	// unsupported names an option this release accepts for API stability but
	// cannot honour yet; Run refuses it rather than silently ignoring it.
	unsupported []string
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

// WithWaitTimeout bounds how long the run may wait, each time it waits,
// for answers to its tool calls (Tool.NeedsApproval, Tool.External):
// after d the run ends as error ("waited too long for an answer (d)").
// Default 24h (db.DefaultWaitTimeout). The time waiting does not count
// against WithTimeout, which bounds each execution.
func WithWaitTimeout(d time.Duration) RunOption { return func(c *runConfig) { c.waitTimeout = d } }

// WithConcurrencyKey limits live runs per key (WorkerConfig.MaxRunsPerKey).
func WithConcurrencyKey(key string) RunOption {
	return func(c *runConfig) { c.unsupported = append(c.unsupported, "WithConcurrencyKey") }
}

// WithStartAt schedules the run for t.
func WithStartAt(t time.Time) RunOption {
	return func(c *runConfig) { c.unsupported = append(c.unsupported, "WithStartAt") }
}

// WithDelay schedules the run d from now.
func WithDelay(d time.Duration) RunOption {
	return func(c *runConfig) { c.unsupported = append(c.unsupported, "WithDelay") }
}

// WithWebhook posts the final run, signed, to url.
func WithWebhook(url string) RunOption {
	return func(c *runConfig) { c.unsupported = append(c.unsupported, "WithWebhook") }
}

func (c *runConfig) validate() error {
	if len(c.unsupported) > 0 {
		return fmt.Errorf("kern: %w: option %s is not supported by this release yet", run.ErrInvalidArgument, c.unsupported[0])
	}
	if c.timeout < 0 {
		return fmt.Errorf("kern: %w: timeout %v is negative", run.ErrInvalidArgument, c.timeout)
	}
	if c.waitTimeout < 0 {
		return fmt.Errorf("kern: %w: wait timeout %v is negative", run.ErrInvalidArgument, c.waitTimeout)
	}
	return nil
}
