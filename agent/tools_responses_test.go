package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// The tool-calling loop through agent.OpenAIResponses: the fake serves
// /v1/responses from the same Reply scripts as /v1/chat/completions, and
// logs the input items as the same messages (function_call items as an
// assistant message's ToolCalls, function_call_output items as "tool"
// messages).

// responsesModel is kerntest.Model through the Responses API.
func responsesModel(t testing.TB) (*fakellm.Server, agent.Model) {
	t.Helper()
	srv, url := kerntest.ModelServer(t)
	return srv, agent.OpenAIResponses{Client: agent.NewOpenAIClient("test-key", url), ID: "fake-model"}
}

// bodyLog records the raw bodies of the requests a fake model receives.
type bodyLog struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (l *bodyLog) all() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.bodies)
}

// responsesModelRecording is responsesModel with every request body kept
// in l, so a test can read the wire items themselves, not only the fake's
// parse of them.
func (l *bodyLog) responsesModelRecording(t testing.TB) (*fakellm.Server, agent.Model) {
	t.Helper()
	fake := fakellm.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		l.bodies = append(l.bodies, body)
		l.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return fake, agent.OpenAIResponses{Client: agent.NewOpenAIClient("test-key", srv.URL+"/v1"), ID: "fake-model"}
}

func requireAPI(t *testing.T, reqs []fakellm.Request, api string) {
	t.Helper()
	for _, r := range reqs {
		if r.API != api {
			t.Fatalf("request %d went to %q, want %q", r.Seq, r.API, api)
		}
	}
}

// twoStepPlan: two calls at once in the first turn, one in the second,
// then the answer.
var twoStepPlan = fakellm.Plan{
	Turns: [][]fakellm.PlanCall{
		{{Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)}, {Name: "get_time", Arguments: json.RawMessage(`{"tz":"Europe/Paris"}`)}},
		{{Name: "book_table", Arguments: json.RawMessage(`{"at":"19:00"}`)}},
	},
	Answer: "Booked: {{results}}",
}

const twoStepAnswer = "Booked: sunny, 21C; 17:30; table booked for 19:00"

type twoStepResult struct {
	e      *env
	final  *run.Output
	msgs   []run.Message
	events []run.Event
	calls  map[string]int // tool name → times called
}

func testToolTwoStepPlan(t *testing.T, newModel modelFactory) twoStepResult {
	t.Helper()
	var mu sync.Mutex
	calls := map[string]int{}
	tool := func(name, output string) agent.Tool {
		return agent.Tool{Name: name, Parameters: map[string]any{"type": "object"},
			Call: func(context.Context, json.RawMessage) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				calls[name]++
				return output, nil
			}}
	}
	e := toolEnvOn(t, newModel, agent.WorkerConfig{}, 0,
		tool("get_weather", "sunny, 21C"), tool("get_time", "17:30"), tool("book_table", "table booked for 19:00"))
	e.model.Script(twoStepPlan.Reply)
	final := runTool(t, e, "Weather and time in Paris, then book a table.")
	if final.Status != run.StatusCompleted || final.Content != twoStepAnswer {
		t.Fatalf("run: %+v", final)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := map[string]int{"get_weather": 1, "get_time": 1, "book_table": 1}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("tool calls %v, want %v", calls, want)
	}
	if e.model.Count() != 3 {
		t.Fatalf("%d model requests, want 3", e.model.Count())
	}
	if m := final.Metrics; m.ModelTurns != 3 || m.ToolCalls != 3 || m.InputTokens == 0 || m.OutputTokens == 0 {
		t.Fatalf("metrics %+v", m)
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,tool,assistant,tool,assistant" ||
		len(msgs[1].ToolCalls) != 2 || len(msgs[4].ToolCalls) != 1 ||
		msgs[2].ToolCallID != msgs[1].ToolCalls[0].ID || msgs[2].Content != "sunny, 21C" ||
		msgs[3].ToolCallID != msgs[1].ToolCalls[1].ID || msgs[3].Content != "17:30" ||
		msgs[5].ToolCallID != msgs[4].ToolCalls[0].ID || msgs[5].Content != "table booked for 19:00" ||
		msgs[6].Content != twoStepAnswer {
		t.Fatalf("transcript %+v", msgs)
	}
	events := checkToolLog(t, e, final, 3)
	return twoStepResult{e: e, final: final, msgs: msgs, events: events, calls: calls}
}

// comparableMessages is a transcript without its times.
func comparableMessages(msgs []run.Message) []run.Message {
	out := slices.Clone(msgs)
	for i := range out {
		out[i].At = time.Time{}
	}
	return out
}

// eventShape is an event log reduced to what both adapters must agree on:
// the types in order (a run of content.delta as one) and the tool events'
// data, sorted (the results of one turn commit in whichever order the
// calls finish).
func eventShape(t *testing.T, events []run.Event) (types []run.EventType, tools []string) {
	t.Helper()
	for _, ev := range events {
		if ev.Type == run.EventContentDelta && len(types) > 0 && types[len(types)-1] == ev.Type {
			continue
		}
		types = append(types, ev.Type)
		if ev.Type == run.EventToolCall || ev.Type == run.EventToolResult {
			var d map[string]any
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatalf("%s data %s: %v", ev.Type, ev.Data, err)
			}
			b, _ := json.Marshal(d) // keys sorted
			tools = append(tools, string(ev.Type)+" "+string(b))
		}
	}
	slices.Sort(tools)
	return types, tools
}

// wireItem is one input item of a Responses API request, as sent.
type wireItem struct {
	Type      string `json:"type"`
	Role      string `json:"role"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Output    any    `json:"output"`
}

func inputItems(t *testing.T, body []byte) []wireItem {
	t.Helper()
	var req struct {
		Input []wireItem `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("request body %s: %v", body, err)
	}
	return req.Input
}

// callItems renders a request's function_call and function_call_output
// items, in order.
func callItems(items []wireItem) []string {
	var out []string
	for _, it := range items {
		switch it.Type {
		case "function_call":
			out = append(out, fmt.Sprintf("call %s %s(%s)", it.CallID, it.Name, it.Arguments))
		case "function_call_output":
			out = append(out, fmt.Sprintf("output %s %v", it.CallID, it.Output))
		}
	}
	return out
}

func TestResponsesToolTwoStepPlan(t *testing.T) {
	t.Parallel()
	var wire bodyLog
	got := testToolTwoStepPlan(t, wire.responsesModelRecording)
	reqs := got.e.model.Requests()
	requireAPI(t, reqs, "responses")
	if !slices.Equal(reqs[0].Tools, []string{"get_weather", "get_time", "book_table"}) {
		t.Fatalf("tools offered: %v", reqs[0].Tools)
	}

	// The follow-ups carry the calls and their outputs as input items.
	bodies := wire.all()
	if len(bodies) != 3 {
		t.Fatalf("%d request bodies, want 3", len(bodies))
	}
	first, second := got.msgs[1].ToolCalls, got.msgs[4].ToolCalls
	turn1 := []string{
		fmt.Sprintf("call %s get_weather({\"city\":\"Paris\"})", first[0].ID),
		fmt.Sprintf("call %s get_time({\"tz\":\"Europe/Paris\"})", first[1].ID),
		fmt.Sprintf("output %s sunny, 21C", first[0].ID),
		fmt.Sprintf("output %s 17:30", first[1].ID),
	}
	turn2 := append(slices.Clone(turn1),
		fmt.Sprintf("call %s book_table({\"at\":\"19:00\"})", second[0].ID),
		fmt.Sprintf("output %s table booked for 19:00", second[0].ID))
	for i, want := range [][]string{nil, turn1, turn2} {
		if items := callItems(inputItems(t, bodies[i])); !slices.Equal(items, want) {
			t.Fatalf("request %d carries call items\n%q\nwant\n%q", i+1, items, want)
		}
	}
	// The ids are the ones the model gave (the fake's call_<seq>_<i>).
	if first[0].ID != "call_1_0" || first[1].ID != "call_1_1" || second[0].ID != "call_2_0" {
		t.Fatalf("call ids %q, %q, %q", first[0].ID, first[1].ID, second[0].ID)
	}
	// And the fake's log reads them as the conversation.
	last := reqs[2].Messages
	if len(last) != 7 || last[0].Role != "system" || last[1].Role != "user" ||
		len(last[2].ToolCalls) != 2 || last[3].ToolCallID != "call_1_0" || last[4].ToolCallID != "call_1_1" ||
		len(last[5].ToolCalls) != 1 || last[6].ToolCallID != "call_2_0" || last[6].Content != "table booked for 19:00" {
		t.Fatalf("last request's messages %+v", last)
	}

	// The same plan through OpenAIChat: the same transcript, the same
	// events, the same conversation sent to the model.
	chat := testToolTwoStepPlan(t, kerntest.Model)
	requireAPI(t, chat.e.model.Requests(), "chat")
	if a, b := comparableMessages(got.msgs), comparableMessages(chat.msgs); !reflect.DeepEqual(a, b) {
		t.Fatalf("transcript through Responses\n%+v\nthrough chat\n%+v", a, b)
	}
	rt, rtools := eventShape(t, got.events)
	ct, ctools := eventShape(t, chat.events)
	if !slices.Equal(rt, ct) || !slices.Equal(rtools, ctools) {
		t.Fatalf("events through Responses %v %q\nthrough chat %v %q", rt, rtools, ct, ctools)
	}
	for i, r := range chat.e.model.Requests() {
		if !reflect.DeepEqual(reqs[i].Messages, r.Messages) {
			t.Fatalf("request %d: Responses sent\n%+v\nchat sent\n%+v", i+1, reqs[i].Messages, r.Messages)
		}
	}
	if got.final.Metrics.ModelTurns != chat.final.Metrics.ModelTurns || got.final.Metrics.ToolCalls != chat.final.Metrics.ToolCalls {
		t.Fatalf("metrics through Responses %+v, through chat %+v", got.final.Metrics, chat.final.Metrics)
	}
}

func TestResponsesToolCancelDuringCall(t *testing.T) {
	t.Parallel()
	e := testToolCancelDuringCall(t, responsesModel)
	requireAPI(t, e.model.Requests(), "responses")
}

func TestResponsesToolRunRetryResumesFromTranscript(t *testing.T) {
	t.Parallel()
	e := testToolRunRetryResumesFromTranscript(t, responsesModel)
	reqs := e.model.Requests()
	requireAPI(t, reqs, "responses")
	if reqs[1].Status != http.StatusInternalServerError || reqs[2].Status != http.StatusOK {
		t.Fatalf("statuses %d, %d: want the second turn failed once with 500, then served", reqs[1].Status, reqs[2].Status)
	}
	// The retried turn resends the stored call and its output.
	if !reflect.DeepEqual(reqs[1].Messages, reqs[2].Messages) {
		t.Fatalf("retry sent\n%+v\nthe failed turn sent\n%+v", reqs[2].Messages, reqs[1].Messages)
	}
}
