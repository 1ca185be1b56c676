package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// What goes wrong in a tool call goes back to the model as its output.

// toolOutcome runs one call the model asks for and returns what the model
// was told, with the stored transcript.
func toolOutcome(t *testing.T, call fakellm.ToolCall, tools ...agent.Tool) (string, []run.Message) {
	t.Helper()
	e := toolEnv(t, agent.WorkerConfig{}, 0, tools...)
	e.model.Script(byStep(fakellm.Reply{ToolCalls: []fakellm.ToolCall{call}}, fakellm.Reply{Content: "Understood."}))
	final := runTool(t, e, "try it")
	if final.Status != run.StatusCompleted || final.Content != "Understood." {
		t.Fatalf("run: %+v", final)
	}
	reqs := e.model.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests", len(reqs))
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,assistant" {
		t.Fatalf("transcript %s", roles(msgs))
	}
	told := reqs[1].Messages[len(reqs[1].Messages)-1]
	if told.Role != "tool" || told.Content != msgs[2].Content {
		t.Fatalf("model told %+v, transcript has %+v", told, msgs[2])
	}
	return told.Content, msgs
}

func TestToolUnknownName(t *testing.T) {
	t.Parallel()
	told, _ := toolOutcome(t, fakellm.ToolCall{Name: "launch_rocket", Arguments: `{}`}, agent.Tool{Name: "get_weather", Call: okTool})
	if !strings.HasPrefix(told, "error: ") || !strings.Contains(told, `"launch_rocket"`) || !strings.Contains(told, "get_weather") {
		t.Fatalf("model told %q", told)
	}
}

func TestToolBadJSONArguments(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	told, msgs := toolOutcome(t, fakellm.ToolCall{Name: "get_weather", Arguments: `{"city": "Par`},
		agent.Tool{Name: "get_weather", Call: func(context.Context, json.RawMessage) (string, error) { calls.Add(1); return "x", nil }})
	if !strings.HasPrefix(told, "error: ") || !strings.Contains(told, "not valid JSON") || calls.Load() != 0 {
		t.Fatalf("model told %q; tool called %d times", told, calls.Load())
	}
	if got := msgs[1].ToolCalls[0].Arguments; got != `{"city": "Par` {
		t.Fatalf("arguments kept as %q, want the model's text", got)
	}
}

func TestToolError(t *testing.T) {
	t.Parallel()
	told, _ := toolOutcome(t, fakellm.ToolCall{Name: "get_weather", Arguments: `{"city":"Atlantis"}`},
		agent.Tool{Name: "get_weather", Call: func(context.Context, json.RawMessage) (string, error) {
			return "", errors.New("no such city: Atlantis")
		}})
	if told != "error: no such city: Atlantis" {
		t.Fatalf("model told %q", told)
	}
}

func TestToolPanicIsReportedNotFatal(t *testing.T) {
	t.Parallel()
	told, _ := toolOutcome(t, fakellm.ToolCall{Name: "boom", Arguments: `{}`},
		agent.Tool{Name: "boom", Call: func(context.Context, json.RawMessage) (string, error) { panic("kaboom") }})
	if !strings.HasPrefix(told, "error: ") || !strings.Contains(told, "panic: kaboom") {
		t.Fatalf("model told %q", told)
	}
}
