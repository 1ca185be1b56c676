package agent

import (
	"context"
	"fmt"
	"time"
)

// Model streams one chat turn. Implementations must return promptly once
// ctx is done, abandoning the call (closing the HTTP stream): that is how a
// cancel or a timeout stops a run mid-answer.
type Model interface {
	// Stream sends req and calls onDelta with each piece of content as it
	// arrives, in order, from the calling goroutine. The returned response
	// holds the whole turn.
	Stream(ctx context.Context, req *ModelRequest, onDelta func(delta string)) (*ModelResponse, error)
}

// Message is one chat message.
type Message struct {
	Role       string // "system", "user", "assistant" or "tool"
	Content    string
	ToolCallID string     // for role "tool": the call it answers
	ToolCalls  []ToolCall // for role "assistant": calls the model asked for
}

// ToolCall is one function call the model asked for.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON text, as the model wrote it
}

// ModelRequest is one chat turn's input.
type ModelRequest struct {
	Messages []Message
	Tools    []Tool
	// OutputSchema, when set, asks for structured output: the answer is a
	// JSON value valid against this JSON Schema (chat: response_format
	// json_schema; Responses API: text.format).
	OutputSchema map[string]any
}

// ModelResponse is one chat turn's output.
type ModelResponse struct {
	Content      string
	ToolCalls    []ToolCall
	FinishReason string
	Usage        Usage
}

// Usage counts tokens of one turn.
type Usage struct {
	InputTokens  int
	OutputTokens int
	TotalTokens  int
}

// ModelError is a failed model call, with what a person needs to know.
type ModelError struct {
	StatusCode int           // the HTTP status, 0 when none was received
	Message    string        // the provider's message, or what went wrong
	RetryAfter time.Duration // from a Retry-After header, 0 when absent
	Retryable  bool          // another attempt may succeed; see Retryable
	Err        error         // the underlying error, if any
}

func (e *ModelError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("model returned HTTP %d: %s", e.StatusCode, e.Message)
	}
	return "model call failed: " + e.Message
}

func (e *ModelError) Unwrap() error { return e.Err }
