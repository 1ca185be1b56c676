package fakellm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// respResult is what a client assembles from a Responses API stream.
type respResult struct {
	types     []openai.ResponseStreamEventType
	content   strings.Builder
	deltas    int
	calls     map[string]*openai.ResponseOutputItem // by item id
	callOrder []string
	completed *openai.CreateResponseResponse
	err       error // the terminal error; nil means the stream ended cleanly
}

func drainResponses(stream *openai.ResponseStream) *respResult {
	res := &respResult{calls: map[string]*openai.ResponseOutputItem{}}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		res.types = append(res.types, ev.Type)
		switch ev.Type {
		case openai.ResponseStreamEventOutputTextDelta:
			res.content.WriteString(ev.Delta)
			res.deltas++
		case openai.ResponseStreamEventOutputItemAdded:
			if ev.Item != nil && ev.Item.Type == "function_call" {
				item := *ev.Item
				res.calls[item.ID] = &item
				res.callOrder = append(res.callOrder, item.ID)
			}
		case openai.ResponseStreamEventFunctionArgumentsDelta:
			if c := res.calls[ev.ItemID]; c != nil {
				c.Arguments += ev.Delta
			}
		case openai.ResponseStreamEventCompleted:
			res.completed = ev.Response
		}
	}
}

func responsesRequest(prompt string) openai.CreateResponseRequest {
	return openai.CreateResponseRequest{Model: openai.GPT4oMini, Input: prompt, Instructions: "Be brief."}
}

func TestResponsesStreamText(t *testing.T) {
	t.Parallel()
	const content = "  Hello there,\nstreaming  world! "
	s, client := start(t, constant(Reply{Content: content}))
	stream, err := client.CreateResponseStream(timeout(t, 5*time.Second), responsesRequest("hi"))
	if err != nil {
		t.Fatalf("CreateResponseStream: %v", err)
	}
	defer stream.Close()
	res := drainResponses(stream)
	if res.err != nil {
		t.Fatalf("stream error: %v", res.err)
	}
	if got := res.content.String(); got != content || res.deltas != 4 {
		t.Errorf("content = %q in %d deltas, want %q in 4", got, res.deltas, content)
	}
	want := []openai.ResponseStreamEventType{
		openai.ResponseStreamEventCreated, openai.ResponseStreamEventInProgress,
		openai.ResponseStreamEventOutputItemAdded, openai.ResponseStreamEventContentPartAdded,
		openai.ResponseStreamEventOutputTextDelta, openai.ResponseStreamEventOutputTextDelta,
		openai.ResponseStreamEventOutputTextDelta, openai.ResponseStreamEventOutputTextDelta,
		openai.ResponseStreamEventOutputTextDone, openai.ResponseStreamEventContentPartDone,
		openai.ResponseStreamEventOutputItemDone, openai.ResponseStreamEventCompleted,
	}
	if !reflect.DeepEqual(res.types, want) {
		t.Errorf("events = %v\nwant     %v", res.types, want)
	}
	r := s.Requests()[0]
	c := res.completed
	if c == nil || c.Status != openai.ResponseStatusCompleted || c.GetOutputText() != content || c.Usage == nil ||
		c.Usage.InputTokens != r.PromptTokens || c.Usage.OutputTokens != CountTokens(content) ||
		c.Usage.TotalTokens != r.PromptTokens+CountTokens(content) {
		t.Errorf("completed = %+v (usage %+v)", c, c.Usage)
	}
	wantMsgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "hi"}}
	if r.API != "responses" || !reflect.DeepEqual(r.Messages, wantMsgs) || !r.Stream || !r.Completed ||
		r.ClientGone || r.Status != 200 || r.Model != openai.GPT4oMini || r.OutputFormat != "" || r.PromptTokens == 0 {
		t.Errorf("logged request = %+v", r)
	}
}

func TestResponsesToolCalls(t *testing.T) {
	t.Parallel()
	calls := []ToolCall{
		{Name: "get_weather", Arguments: `{"city":"Paris","unit":"celsius"}`},
		{ID: "call_given", Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`},
	}
	_, client := start(t, constant(Reply{ToolCalls: calls}))
	stream, err := client.CreateResponseStream(timeout(t, 5*time.Second), responsesRequest("weather?"))
	if err != nil {
		t.Fatalf("CreateResponseStream: %v", err)
	}
	defer stream.Close()
	res := drainResponses(stream)
	if res.err != nil || res.completed == nil {
		t.Fatalf("stream error %v, completed %v", res.err, res.completed)
	}
	if res.content.Len() != 0 || len(res.callOrder) != 2 {
		t.Fatalf("content %q, calls %v: want no text and two calls", res.content.String(), res.callOrder)
	}
	for i, want := range []ToolCall{{ID: "call_1_0", Name: calls[0].Name, Arguments: calls[0].Arguments}, calls[1]} {
		got := res.calls[res.callOrder[i]]
		if got.CallID != want.ID || got.Name != want.Name || got.Arguments != want.Arguments {
			t.Errorf("call %d = %+v, want %+v", i, got, want)
		}
	}
	if n := len(res.completed.Output); n != 2 {
		t.Errorf("completed output has %d items, want 2", n)
	}
}

func TestResponsesInputItems(t *testing.T) {
	t.Parallel()
	s, client := start(t, nil)
	req := openai.CreateResponseRequest{
		Model:        "fake-model",
		Instructions: "Use tools.",
		Input: []any{
			openai.ResponseInputMessage{Role: "user", Content: "weather in Paris?"},
			openai.ResponseInputMessage{Type: "message", Role: "assistant", Content: []openai.ResponseInputText{
				{Type: "output_text", Text: "Let me check."},
			}},
			map[string]any{"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": `{"city":"Paris"}`},
			map[string]any{"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": `{}`},
			openai.ResponseFunctionCallOutput{Type: "function_call_output", CallID: "c1", Output: "sunny"},
			openai.ResponseFunctionCallOutput{Type: "function_call_output", CallID: "c2", Output: "noon"},
			map[string]any{"type": "reasoning", "summary": []any{}}, // not modelled: skipped
		},
		Tools: []openai.ResponseTool{
			openai.NewResponseFunctionTool(openai.FunctionDefinition{Name: "get_weather"}),
			openai.NewResponseFunctionTool(openai.FunctionDefinition{Name: "get_time"}),
		},
		Text: &openai.ResponseTextConfig{Format: &openai.ResponseTextFormat{
			Type: "json_schema", Name: "output", Schema: map[string]any{"type": "object"},
		}},
	}
	stream, err := client.CreateResponseStream(timeout(t, 5*time.Second), req)
	if err != nil {
		t.Fatalf("CreateResponseStream: %v", err)
	}
	defer stream.Close()
	if res := drainResponses(stream); res.err != nil || res.completed == nil {
		t.Fatalf("stream error %v", res.err)
	}
	r := s.Requests()[0]
	want := []Message{
		{Role: "system", Content: "Use tools."},
		{Role: "user", Content: "weather in Paris?"},
		{Role: "assistant", Content: "Let me check.", ToolCalls: []ToolCall{
			{ID: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`},
			{ID: "c2", Name: "get_time", Arguments: `{}`},
		}},
		{Role: "tool", ToolCallID: "c1", Content: "sunny"},
		{Role: "tool", ToolCallID: "c2", Content: "noon"},
	}
	if !reflect.DeepEqual(r.Messages, want) {
		t.Errorf("messages = %+v\nwant       %+v", r.Messages, want)
	}
	if !reflect.DeepEqual(r.Tools, []string{"get_weather", "get_time"}) || r.OutputFormat != "output" {
		t.Errorf("tools %v, output format %q", r.Tools, r.OutputFormat)
	}
	// DefaultReply answers the last user message, as it does for chat.
	if r.LastUserMessage() != "weather in Paris?" {
		t.Errorf("last user message %q", r.LastUserMessage())
	}
}

func TestChatResponseFormatIsLogged(t *testing.T) {
	t.Parallel()
	s, client := start(t, nil)
	req := userRequest("hi", false)
	req.ResponseFormat = &openai.ChatCompletionResponseFormat{
		Type:       openai.ChatCompletionResponseFormatTypeJSONSchema,
		JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: "answer", Schema: rawSchema(`{"type":"object"}`)},
	}
	if _, err := client.CreateChatCompletion(timeout(t, 5*time.Second), req); err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	req.ResponseFormat = nil
	if _, err := client.CreateChatCompletion(timeout(t, 5*time.Second), req); err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	reqs := s.Requests()
	if reqs[0].OutputFormat != "answer" || reqs[1].OutputFormat != "" || reqs[0].API != "chat" {
		t.Errorf("output formats %q, %q (api %q)", reqs[0].OutputFormat, reqs[1].OutputFormat, reqs[0].API)
	}
}

type rawSchema string

func (r rawSchema) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// headerRecorder keeps the last response's headers, which go-openai's
// errors do not carry.
type headerRecorder struct{ last http.Header }

func (h *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		h.last = resp.Header
	}
	return resp, err
}

func TestResponsesErrors(t *testing.T) {
	t.Parallel()
	s := New()
	s.Script(constant(Reply{Status: 429, ErrorMessage: "slow down", RetryAfter: "3"}))
	base, stop, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	rec := &headerRecorder{}
	cfg := openai.DefaultConfig("test")
	cfg.BaseURL = base
	cfg.HTTPClient = &http.Client{Transport: rec}
	client := openai.NewClientWithConfig(cfg)

	_, err = client.CreateResponseStream(timeout(t, 5*time.Second), responsesRequest("hi"))
	apiErr, ok := errors.AsType[*openai.APIError](err)
	if !ok || apiErr.HTTPStatusCode != 429 || apiErr.Message != "slow down" {
		t.Fatalf("err = %v, want an APIError 429 \"slow down\"", err)
	}
	if got := rec.last.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want 3", got)
	}
	if r := s.Requests()[0]; r.Status != 429 || !r.Completed {
		t.Errorf("logged request = %+v", r)
	}

	// Not streamed: refused, and not logged.
	_, err = client.CreateResponse(timeout(t, 5*time.Second), responsesRequest("hi"))
	if apiErr, ok := errors.AsType[*openai.APIError](err); !ok || apiErr.HTTPStatusCode != 400 ||
		!strings.Contains(apiErr.Message, "stream") {
		t.Errorf("non-streaming err = %v, want a 400 about streaming", err)
	}
	if n := s.Count(); n != 1 {
		t.Errorf("logged %d requests, want 1", n)
	}
}

func TestResponsesCutAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		reply Reply
		text  string // what arrives before the cut
	}{
		{"mid-text", Reply{Content: "one two three four", CutAfter: 2}, "one two "},
		{"after the last piece", Reply{Content: "one two", CutAfter: 9}, "one two"},
		{"mid-call", Reply{ToolCalls: []ToolCall{{Name: "f", Arguments: `{"a":1}`}}, CutAfter: 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, client := start(t, constant(tc.reply))
			stream, err := client.CreateResponseStream(timeout(t, 5*time.Second), responsesRequest("hi"))
			if err != nil {
				t.Fatalf("CreateResponseStream: %v", err)
			}
			defer stream.Close()
			res := drainResponses(stream)
			if !errors.Is(res.err, io.ErrUnexpectedEOF) || res.completed != nil || res.content.String() != tc.text {
				t.Errorf("err %v, completed %v, text %q: want an unexpected EOF after %q", res.err, res.completed,
					res.content.String(), tc.text)
			}
			if r := s.Requests()[0]; !r.Cut || r.Completed {
				t.Errorf("logged request = %+v", r)
			}
		})
	}
}

func TestResponsesClientGone(t *testing.T) {
	t.Parallel()
	for _, reply := range []Reply{{Hang: true}, {Content: LoremWords(200), Drip: 5 * time.Millisecond}} {
		s, client := start(t, constant(reply))
		ctx, cancel := context.WithCancel(timeout(t, 10*time.Second))
		stream, err := client.CreateResponseStream(ctx, responsesRequest("hi"))
		if err != nil {
			t.Fatalf("CreateResponseStream: %v", err)
		}
		if !reply.Hang {
			// A few events in: the stream is really under way.
			for range 5 {
				if _, err := stream.Recv(); err != nil {
					t.Fatalf("Recv: %v", err)
				}
			}
		}
		cancel()
		stream.Close()
		r, err := s.WaitClientGone(timeout(t, 5*time.Second), 1)
		if err != nil || !r.ClientGone || r.Completed {
			t.Errorf("hang=%v: WaitClientGone = %+v, %v", reply.Hang, r, err)
		}
	}
}
