package run

import "time"

// ToolCall is one function call a model asked for.
type ToolCall struct {
	ID   string
	Name string
	// Arguments is the JSON text as the model wrote it, valid or not.
	Arguments string
}

// Message is one entry of a run's transcript: the prompt, each finished
// model turn, each tool result. The agent's instructions and the history
// of earlier runs of the session are not part of it.
type Message struct {
	Seq        int    // 1, 2, 3 … per run
	Role       string // "user", "assistant" or "tool"
	Content    string
	ToolCalls  []ToolCall // role assistant: the calls it asked for
	ToolCallID string     // role tool: the call it answers
	At         time.Time
}
