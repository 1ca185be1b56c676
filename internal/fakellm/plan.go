package fakellm

import (
	"encoding/json"
	"strings"
)

// planPrefix starts a plan line in a prompt; the rest of the line is JSON.
const planPrefix = "fake-plan:"

// maxPlanTurns bounds a plan so a prompt cannot make the server loop on
// tool calls for ever (kern's MaxSteps would stop it anyway).
const maxPlanTurns = 100

// Plan scripts a tool-calling conversation from the prompt, for the demo,
// the cookbook and a process that can only be steered by prompts: each turn
// is the tool calls of one model turn, and Answer is the final answer once
// every turn has been played. A line of the last user message
//
//	fake-plan: {"turns": [[{"name": "add", "arguments": {"a": 2, "b": 3}}]], "answer": "2 + 3 = {{last}}"}
//
// makes the first request ask for add(2, 3) and the request that carries
// its result answer "2 + 3 = 5". Several calls in one turn are asked for
// together (parallel calls). In Answer, {{last}} is replaced by the last
// tool result's content and {{results}} by all of them, joined by "; ".
//
// Which turn is due is read from the conversation itself: the number of
// assistant messages with tool calls after the last user message. So the
// server keeps no state, and a client that resends a conversation (after
// a crash, say) gets the same reply for it.
type Plan struct {
	Turns  [][]PlanCall `json:"turns"`
	Answer string       `json:"answer"`
}

// PlanCall is one tool call of a plan turn. Arguments is any JSON value (an
// object, normally); RawArguments, when set, is sent as written instead, so
// a plan can script malformed arguments.
type PlanCall struct {
	Name         string          `json:"name"`
	Arguments    json.RawMessage `json:"arguments"`
	RawArguments string          `json:"raw_arguments"`
}

// ParsePlan finds a plan line in text. ok is false when there is none or
// it is not valid JSON (a typo is ignored, like a malformed directive).
func ParsePlan(text string) (p Plan, ok bool) {
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		rest, found := strings.CutPrefix(line, planPrefix)
		if !found {
			continue
		}
		if err := json.Unmarshal([]byte(rest), &p); err != nil || len(p.Turns) > maxPlanTurns {
			return Plan{}, false
		}
		return p, true
	}
	return Plan{}, false
}

// StripPlan removes plan lines from text.
func StripPlan(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimSpace(line), planPrefix) {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// Reply is the plan's reply to req: the next turn's tool calls, or the
// answer once all turns are done.
func (p Plan) Reply(req Request) Reply {
	lastUser := -1
	for i, m := range req.Messages {
		if m.Role == "user" {
			lastUser = i
		}
	}
	turn := 0
	var results []string
	for _, m := range req.Messages[lastUser+1:] {
		switch {
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			turn++
		case m.Role == "tool":
			results = append(results, m.Content)
		}
	}
	if turn < len(p.Turns) {
		var r Reply
		for _, c := range p.Turns[turn] {
			args := c.RawArguments
			if args == "" {
				args = string(c.Arguments)
			}
			if args == "" {
				args = "{}"
			}
			r.ToolCalls = append(r.ToolCalls, ToolCall{Name: c.Name, Arguments: args})
		}
		return r
	}
	last := ""
	if len(results) > 0 {
		last = results[len(results)-1]
	}
	answer := p.Answer
	if answer == "" {
		answer = "Done: {{results}}"
	}
	answer = strings.ReplaceAll(answer, "{{last}}", last)
	answer = strings.ReplaceAll(answer, "{{results}}", strings.Join(results, "; "))
	return Reply{Content: answer}
}
