package run

import "time"

// Output is one run as stored: what was asked, where it is, and what the
// model has answered so far.
type Output struct {
	RunID     string
	SessionID string
	AgentName string
	Name      string
	Status    Status
	Input     string // the prompt
	// Content is the final answer once completed; while running, and after a
	// cancel, it holds what has been streamed and persisted so far.
	Content string
	// Error is set when Status is StatusError: what went wrong, for a
	// person. While a run is pending for a retry it holds the last attempt's
	// error.
	Error    string
	Metadata map[string]any
	Metrics  Metrics
	// Attempt counts executions: 1 on the first, 0 while never started.
	Attempt int
	// Timeout bounds execution; 0 means the worker's default. Each
	// execution has all of it: time spent waiting for answers is not
	// counted.
	Timeout time.Duration
	// Waiting lists, while Status is StatusWaiting, the tool calls the run
	// waits on: answer each with ApproveToolCall, RejectToolCall or
	// SubmitToolResult. Empty otherwise.
	Waiting []ToolCall
	// WaitTimeout is how long the run may wait for answers each time it
	// waits (WithWaitTimeout); 0 means the default, 24h.
	WaitTimeout time.Duration
	// Webhook is the delivery of the run's webhook (WithWebhook); nil for
	// a run without one.
	Webhook *WebhookDelivery
	// TenantID is the tenant the run belongs to: set by an HTTP API key
	// (package server) or WithTenant; empty for the operator's own runs.
	// A tenant's key sees only its tenant's runs.
	TenantID string
	// ParentRunID is the id of the run that started this one as a child
	// (a sub-agent's run), in the same tenant; "" for a top-level run.
	ParentRunID string
	CreatedAt   time.Time
	StartedAt   *time.Time
	FinishedAt  *time.Time
}

// Metrics are what a run cost and how fast it was: the whole run, over all
// of its executions (a retry, a rescue, each resume after a wait for
// answers), whatever it ended as (completed, error, cancelled).
type Metrics struct {
	// Tokens are summed over the model calls that finished and were kept: a
	// turn that stored tool calls, and the final one. A call cut short (by
	// a cancel, a failure) reported none.
	InputTokens  int
	OutputTokens int
	TotalTokens  int
	// TimeToFirstToken is from a model call to its first content, in the
	// first execution that streamed content and recorded it (with a turn it
	// stored, or at its end): what a person first waited for.
	TimeToFirstToken time.Duration
	// Duration is from the run's first start to its terminal status
	// (StartedAt to FinishedAt, as Postgres dates them), waits for answers
	// and retry delays included; 0 for a run that never started, and until
	// the run ends.
	Duration   time.Duration
	ModelTurns int // model calls that finished, over all attempts' kept steps
	ToolCalls  int // tool calls the model asked for
}

// WebhookDelivery is where the webhook of a run (WithWebhook) stands. It is
// sent once the run is terminal, retried with backoff on an error or a
// non-2xx answer.
type WebhookDelivery struct {
	URL string
	// Status is "pending" (not sent yet, or being retried), "delivered"
	// (an attempt got a 2xx answer) or "failed" (every attempt failed).
	Status    string
	Attempts  int    // attempts made so far
	LastError string // the last failed attempt's error; "" once delivered
}
