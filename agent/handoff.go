package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kern-go/kern/run"
)

// Handoffs. A model turn that calls "transfer_to_<name>" hands the run
// over: the call's result ("Transferred to <name>.") is stored like any
// tool result, then one fenced write (engine.Store.HandOff) moves the run
// to the other agent — agent_name, a new job on that agent's queue, back
// to pending, a run.handoff event — and this execution ends. A worker
// serving that agent continues from the stored transcript under its own
// instructions, tools and model. The handoff uses no attempt. A worker
// that dies between the stored result and the handoff leaves a running
// run that is rescued as any other: the next execution finds the
// transfer's result stored and hands over then (handoffIn looks at the
// transcript's last turn), so a handoff happens once.

// handoffPrefix begins the name of the tool that hands a run to an agent.
const handoffPrefix = "transfer_to_"

// handoffTool is the tool that hands a run over to target.
func handoffTool(target *Agent) Tool {
	result := fmt.Sprintf("Transferred to %s.", target.Name)
	return Tool{
		Name:        handoffPrefix + target.Name,
		Description: fmt.Sprintf("Hand the conversation over to the agent %q, which continues it.", target.Name),
		Parameters:  map[string]any{"type": "object", "properties": map[string]any{}},
		Call:        func(context.Context, json.RawMessage) (string, error) { return result, nil },
	}
}

// offeredTools are the tools the model is offered: Tools, then a
// transfer_to_<name> per handoff.
func (a *Agent) offeredTools() []Tool {
	if len(a.Handoffs) == 0 {
		return a.Tools
	}
	tools := make([]Tool, 0, len(a.Tools)+len(a.Handoffs))
	tools = append(tools, a.Tools...)
	for _, h := range a.Handoffs {
		tools = append(tools, handoffTool(h))
	}
	return tools
}

// validateHandoffs refuses handoffs the loop could not offer: a nil or
// nameless agent, the agent itself, one named twice, or one whose tool
// name clashes with a tool of the agent's.
func (a *Agent) validateHandoffs() error {
	tools := make(map[string]bool, len(a.Tools))
	for _, t := range a.Tools {
		tools[t.Name] = true
	}
	for i, h := range a.Handoffs {
		switch {
		case h == nil || h.Name == "":
			return fmt.Errorf("kern: %w: agent %q: handoff %d has no agent or no Name", run.ErrInvalidArgument, a.Name, i)
		case h.Name == a.Name:
			return fmt.Errorf("kern: %w: agent %q hands off to itself", run.ErrInvalidArgument, a.Name)
		case !toolName.MatchString(handoffPrefix + h.Name):
			return fmt.Errorf("kern: %w: agent %q: handoff to %q: its tool name %q is not a valid tool name (letters, digits, '_' and '-', at most 64)",
				run.ErrInvalidArgument, a.Name, h.Name, handoffPrefix+h.Name)
		case tools[handoffPrefix+h.Name]:
			return fmt.Errorf("kern: %w: agent %q: handoff to %q clashes with its tool %q", run.ErrInvalidArgument, a.Name, h.Name, handoffPrefix+h.Name)
		}
		tools[handoffPrefix+h.Name] = true
	}
	return nil
}

// handoffIn is the agent the calls hand the run to: the first call of a
// transfer_to_<name> tool of this agent's handoffs ("" for none).
func (x *execution) handoffIn(calls []ToolCall) string {
	for _, c := range calls {
		for _, h := range x.agent.Handoffs {
			if c.Name == handoffPrefix+h.Name {
				return h.Name
			}
		}
	}
	return ""
}

// lastTurnCalls are the calls of the last stored turn once all their
// results are in the conversation (nil otherwise): a resumed execution
// whose last turn handed the run over, and whose worker died before the
// handoff was written, hands over now.
func (t *transcript) lastTurnCalls() []ToolCall {
	if len(t.results) > 0 {
		return nil
	}
	for i := len(t.msgs) - 1; i >= 0; i-- {
		switch t.msgs[i].Role {
		case "tool":
			continue
		case "assistant":
			return t.msgs[i].ToolCalls
		}
		return nil
	}
	return nil
}

// handOff moves the run to agent to; the execution ends after it.
func (x *execution) handOff(ctx context.Context, to string) error {
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	return x.write(ctx, func(wctx context.Context) error { return x.e.store.HandOff(wctx, x.fence, to) })
}
