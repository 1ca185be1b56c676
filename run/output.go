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
	// Timeout bounds execution; 0 means the worker's default.
	Timeout    time.Duration
	CreatedAt  time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
}

// Metrics are what a run cost and how fast it was.
type Metrics struct {
	InputTokens      int
	OutputTokens     int
	TotalTokens      int
	TimeToFirstToken time.Duration // from the model call to its first content
	Duration         time.Duration // from start of execution to the terminal status
	ModelTurns       int           // model calls that finished, over all attempts' kept steps
	ToolCalls        int           // tool calls the model asked for
}
