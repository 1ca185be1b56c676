package run

import (
	"encoding/json"
	"time"
)

// EventType names what happened in a run.
type EventType string

const (
	EventRunStarted   EventType = "run.started"
	EventContentDelta EventType = "content.delta"
	EventToolCall     EventType = "tool.call"
	EventToolResult   EventType = "tool.result"
	// EventOutputRejected: the model's answer did not match Agent.OutputSchema
	// and it is asked again: {"error"}. Content streamed before it was that
	// answer's; the run's content starts afresh.
	EventOutputRejected EventType = "output.rejected"
	EventRunRetrying    EventType = "run.retrying" // back to pending after a failed attempt: {"attempt","error","retry_in_ms"}
	EventRunReleased    EventType = "run.released" // handed back by a stopping worker
	// EventRunHandoff: the model handed the run to another agent (a call of
	// its "transfer_to_<name>" tool): {"from","to"}. The run is pending on
	// that agent's workers; Output.AgentName names it from now on.
	EventRunHandoff EventType = "run.handoff"
	// EventRunWaiting: the run waits for answers to the calls {"calls":
	// [{"id","name","arguments","external"?}]}; it holds no worker until
	// they come. "external": true marks a call of an External tool, whose
	// answer is its result (SubmitToolResult), never an approval.
	EventRunWaiting   EventType = "run.waiting"
	EventToolApproved EventType = "tool.approved" // {"id"}: a worker makes the call next
	EventToolRejected EventType = "tool.rejected" // {"id","reason"}: the model is told the reason
	EventRunCompleted EventType = "run.completed"
	EventRunError     EventType = "run.error"
	EventRunCancelled EventType = "run.cancelled"
)

// Terminal reports whether t ends a run's event stream.
func (t EventType) Terminal() bool {
	switch t {
	case EventRunCompleted, EventRunError, EventRunCancelled:
		return true
	}
	return false
}

// Event is one entry of a run's ordered event log.
type Event struct {
	RunID string
	Seq   int64 // 1, 2, 3 … per run, gap-free, in commit order
	Type  EventType
	// Data depends on Type: content.delta {"delta": text}; tool.call
	// {"id","name","arguments"}; tool.result {"id","name","output"}.
	Data json.RawMessage
	At   time.Time
}
