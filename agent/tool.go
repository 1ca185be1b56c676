package agent

import (
	"context"
	"encoding/json"
)

// Tool is a function the model may call. An Agent with Tools runs a loop:
// each model turn may ask for tool calls; kern calls them (those of one turn
// concurrently, at most MaxParallelToolCalls at once), sends their results
// back in the order the model asked, and asks the model again, until it
// answers without calls or the agent's MaxSteps model turns are used up.
//
// Every finished model turn and every tool result is committed as it
// happens, so a retry, a rescue after a crash or a hand-back resumes from
// the transcript: a tool that returned is not called again. A call that was
// in flight when its worker died, or whose result could not be committed,
// is called again by the next attempt — so a tool with side effects should
// key them on ToolCallID(ctx), which is the same on every attempt. See the
// package doc for which steps are exactly once and which at least once.
//
// What goes wrong goes back to the model as the call's output, so it can
// correct itself: an unknown tool name, arguments that are not valid JSON
// (the model's text is kept as it wrote it), the error Call returned (as
// "error: …"), or a panic in Call (recovered and logged; the worker carries
// on).
type Tool struct {
	// Name is how the model calls it: letters, digits, '_' and '-', at
	// most 64, unique among the agent's tools.
	Name        string
	Description string
	Parameters  map[string]any // JSON Schema of the arguments object
	// Call runs the tool with the arguments the model wrote, a JSON value
	// ({} when the model sent none). ctx is the run's: it is cancelled when
	// the run is cancelled, times out or is handed back, and Call should
	// return promptly then. What Call returns is what the model reads.
	// It is nil for an External tool, and required otherwise.
	Call func(ctx context.Context, args json.RawMessage) (string, error)
	// NeedsApproval makes a run whose model asks for a call of this tool
	// wait (run.StatusWaiting, holding no worker) until the call is
	// approved (Agent.ApproveToolCall: a worker then makes it) or rejected
	// (Agent.RejectToolCall: the model reads the reason instead).
	NeedsApproval bool
	// External marks a tool kern never calls (Call is nil): a run whose
	// model asks for it waits until someone answers with the call's result
	// (Agent.SubmitToolResult). NeedsApproval and External exclude each
	// other.
	External bool
}

// needsAnswer reports whether a call of the tool waits for an answer
// before it can go on: an External tool's always, one that NeedsApproval
// until it is approved.
func (t *Tool) needsAnswer(approved bool) bool {
	return t != nil && (t.External || (t.NeedsApproval && !approved))
}

// ToolCallID, inside Tool.Call, is the call's stable id, "<run id>/<tool
// call id>": the same on every attempt that could reach the call, so a tool
// can use it as the idempotency key of its side effect. Outside a tool call
// it is "".
func ToolCallID(ctx context.Context) string {
	id, _ := ctx.Value(toolCallIDKey{}).(string)
	return id
}
