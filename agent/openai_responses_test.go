package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// startResponsesFake serves a fake model scripted with fn (nil: its
// default replies) and returns it with an OpenAIResponses pointed at it.
func startResponsesFake(t *testing.T, fn func(fakellm.Request) fakellm.Reply) (*fakellm.Server, OpenAIResponses) {
	t.Helper()
	fake := fakellm.New()
	fake.Script(fn)
	base, stop, err := fake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return fake, OpenAIResponses{Client: NewOpenAIClient("test", base), ID: "fake"}
}

func replyWith(r fakellm.Reply) func(fakellm.Request) fakellm.Reply {
	return func(fakellm.Request) fakellm.Reply { return r }
}

func userTurn(prompt string) *ModelRequest {
	return &ModelRequest{Messages: []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: prompt}}}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestResponsesStreamsTextInOrderWithUsage(t *testing.T) {
	t.Parallel()
	const content = "The capital of France is Paris, of course."
	fake, m := startResponsesFake(t, replyWith(fakellm.Reply{Content: content, ChunkSize: 5, Drip: time.Millisecond}))
	var deltas []string
	resp, err := m.Stream(testCtx(t, 10*time.Second), userTurn("capital?"), func(d string) { deltas = append(deltas, d) })
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if len(deltas) != 9 || strings.Join(deltas, "") != content || deltas[0] != "The c" {
		t.Errorf("deltas = %q, want %q in 9 pieces of 5 runes", deltas, content)
	}
	if resp.Content != content || resp.FinishReason != "stop" || resp.ToolCalls != nil {
		t.Errorf("response = %+v", resp)
	}
	r := fake.Requests()[0]
	want := Usage{InputTokens: r.PromptTokens, OutputTokens: fakellm.CountTokens(content),
		TotalTokens: r.PromptTokens + fakellm.CountTokens(content)}
	if resp.Usage != want || want.InputTokens == 0 {
		t.Errorf("usage = %+v, want %+v", resp.Usage, want)
	}
	wantMsgs := []fakellm.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "capital?"}}
	if r.API != "responses" || !reflect.DeepEqual(r.Messages, wantMsgs) || r.Model != "fake" || !r.Stream || !r.Completed {
		t.Errorf("fake saw %+v", r)
	}
}

func TestResponsesTwoToolCallsInOneTurn(t *testing.T) {
	t.Parallel()
	fake, m := startResponsesFake(t, replyWith(fakellm.Reply{ToolCalls: []fakellm.ToolCall{
		{Name: "get_weather", Arguments: `{"city":"Paris","unit":"celsius"}`},
		{ID: "call_b", Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`},
	}}))
	req := userTurn("weather and time in Paris?")
	req.Tools = []Tool{
		{Name: "get_weather", Description: "Weather now.", Parameters: map[string]any{"type": "object"}},
		{Name: "get_time", Parameters: map[string]any{"type": "object"}},
	}
	resp, err := m.Stream(testCtx(t, 10*time.Second), req, func(d string) { t.Errorf("unexpected delta %q", d) })
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []ToolCall{
		{ID: "call_1_0", Name: "get_weather", Arguments: `{"city":"Paris","unit":"celsius"}`},
		{ID: "call_b", Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`},
	}
	if !reflect.DeepEqual(resp.ToolCalls, want) || resp.FinishReason != "tool_calls" || resp.Content != "" {
		t.Errorf("response = %+v, want calls %+v", resp, want)
	}
	if got := fake.Requests()[0].Tools; !reflect.DeepEqual(got, []string{"get_weather", "get_time"}) {
		t.Errorf("tools offered = %v", got)
	}
}

func TestResponsesFollowUpCarriesCallItems(t *testing.T) {
	t.Parallel()
	fake, m := startResponsesFake(t, nil)
	calls := []ToolCall{
		{ID: "call_a", Name: "get_weather", Arguments: `{"city":"Paris"}`},
		{ID: "call_b", Name: "get_time", Arguments: `{}`},
	}
	req := &ModelRequest{Messages: []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "weather and time in Paris?"},
		{Role: "assistant", ToolCalls: calls},
		{Role: "tool", ToolCallID: "call_a", Content: "sunny, 21°C"},
		{Role: "tool", ToolCallID: "call_b", Content: "noon"},
		{Role: "assistant", Content: "Sunny and noon."},
		{Role: "user", Content: "thanks"},
	}}
	if _, err := m.Stream(testCtx(t, 10*time.Second), req, func(string) {}); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []fakellm.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "weather and time in Paris?"},
		{Role: "assistant", ToolCalls: []fakellm.ToolCall{
			{ID: "call_a", Name: "get_weather", Arguments: `{"city":"Paris"}`},
			{ID: "call_b", Name: "get_time", Arguments: `{}`},
		}},
		{Role: "tool", ToolCallID: "call_a", Content: "sunny, 21°C"},
		{Role: "tool", ToolCallID: "call_b", Content: "noon"},
		{Role: "assistant", Content: "Sunny and noon."},
		{Role: "user", Content: "thanks"},
	}
	if got := fake.Requests()[0].Messages; !reflect.DeepEqual(got, want) {
		t.Errorf("fake saw messages\n%+v\nwant\n%+v", got, want)
	}
}

func TestResponsesRateLimitedWithRetryAfter(t *testing.T) {
	t.Parallel()
	_, m := startResponsesFake(t, replyWith(fakellm.Reply{Status: 429, ErrorMessage: "slow down", RetryAfter: "2"}))
	_, err := m.Stream(testCtx(t, 10*time.Second), userTurn("hi"), func(string) {})
	me, ok := errors.AsType[*ModelError](err)
	if !ok || me.StatusCode != 429 || me.RetryAfter != 2*time.Second || !me.Retryable || me.Message != "slow down" {
		t.Fatalf("err = %#v, want ModelError{429, \"slow down\", RetryAfter 2s, Retryable}", err)
	}
}

func TestResponsesBadRequestIsNotRetryable(t *testing.T) {
	t.Parallel()
	_, m := startResponsesFake(t, replyWith(fakellm.Reply{Status: 400, ErrorMessage: "context too long"}))
	_, err := m.Stream(testCtx(t, 10*time.Second), userTurn("hi"), func(string) {})
	me, ok := errors.AsType[*ModelError](err)
	if !ok || me.StatusCode != 400 || me.Retryable || me.Message != "context too long" || Retryable(err) {
		t.Fatalf("err = %#v, want a non-retryable ModelError 400", err)
	}
}

func TestResponsesCutStreamIsRetryable(t *testing.T) {
	t.Parallel()
	_, m := startResponsesFake(t, replyWith(fakellm.Reply{Content: "one two three four", CutAfter: 2}))
	resp, err := m.Stream(testCtx(t, 10*time.Second), userTurn("hi"), func(string) {})
	me, ok := errors.AsType[*ModelError](err)
	if !ok || !me.Retryable || me.Message != errStreamCut || resp == nil || resp.Content != "one two " {
		t.Fatalf("Stream = %+v, %#v: want the partial content and a retryable cut", resp, err)
	}
}

func TestResponsesCancelClosesStream(t *testing.T) {
	t.Parallel()
	fake, m := startResponsesFake(t, replyWith(fakellm.Reply{Content: fakellm.LoremWords(2000), Drip: 5 * time.Millisecond}))
	ctx, cancel := context.WithCancel(testCtx(t, 20*time.Second))
	defer cancel()
	deltas := 0
	start := time.Now()
	resp, err := m.Stream(ctx, userTurn("write an essay"), func(string) {
		// Cancelled from the calling goroutine mid-stream, as a CancelRun
		// reaching the run's context would.
		if deltas++; deltas == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || resp == nil || resp.Content == "" {
		t.Fatalf("Stream = %v, %v: want context.Canceled with partial content", resp, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Stream returned %v after the cancel, want promptly", took)
	}
	// The fake notices the closed connection: poll its log with a deadline.
	r, err := fake.WaitClientGone(testCtx(t, 5*time.Second), 1)
	if err != nil || !r.ClientGone || r.Completed {
		t.Fatalf("fake request = %+v, %v: want ClientGone", r, err)
	}
}

func TestOutputSchemaSetsTheRequestFormat(t *testing.T) {
	t.Parallel()
	fake, responses := startResponsesFake(t, replyWith(fakellm.Reply{Content: `{"city":"Paris"}`}))
	chat := OpenAIChat{Client: responses.Client, ID: "fake"}
	schema := map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}
	for _, m := range []Model{chat, responses} {
		req := userTurn("capital?")
		req.OutputSchema = schema
		if _, err := m.Stream(testCtx(t, 10*time.Second), req, func(string) {}); err != nil {
			t.Fatalf("%T with schema: %v", m, err)
		}
		if _, err := m.Stream(testCtx(t, 10*time.Second), userTurn("capital?"), func(string) {}); err != nil {
			t.Fatalf("%T without schema: %v", m, err)
		}
	}
	var got []string
	for _, r := range fake.Requests() {
		got = append(got, r.API+":"+r.OutputFormat)
	}
	if want := []string{"chat:output", "chat:", "responses:output", "responses:"}; !reflect.DeepEqual(got, want) {
		t.Errorf("requests (api:format) = %q, want %q", got, want)
	}
	// A schema that cannot be encoded fails before any request, for good.
	req := userTurn("capital?")
	req.OutputSchema = map[string]any{"bad": make(chan int)}
	for _, m := range []Model{chat, responses} {
		if _, err := m.Stream(testCtx(t, 10*time.Second), req, func(string) {}); err == nil || Retryable(err) {
			t.Errorf("%T with an unencodable schema: %v, want a non-retryable error", m, err)
		}
	}
	if n := fake.Count(); n != 4 {
		t.Errorf("fake saw %d requests, want 4", n)
	}
}

// sseServer answers every request with the given Responses API events.
func sseServer(t *testing.T, events ...string) OpenAIResponses {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			_, _ = fmt.Fprintf(w, "data: %s\n\n", ev)
		}
	}))
	t.Cleanup(srv.Close)
	return OpenAIResponses{Client: NewOpenAIClient("", srv.URL+"/v1"), ID: "fake"}
}

// The fake fails with HTTP errors only; a provider can also fail inside a
// 200 stream.
func TestResponsesFailedAndIncompleteEvents(t *testing.T) {
	t.Parallel()
	const delta = `{"type":"response.output_text.delta","item_id":"m","output_index":0,"delta":"Hel"}`
	for _, tc := range []struct {
		name      string
		event     string
		message   string
		retryable bool
	}{
		{"failed", `{"type":"response.failed","response":{"id":"r","status":"failed","output":[],` +
			`"error":{"code":"server_error","message":"the model crashed"}}}`, "server_error: the model crashed", true},
		{"failed invalid", `{"type":"response.failed","response":{"id":"r","status":"failed","output":[],` +
			`"error":{"code":"invalid_prompt","message":"no"}}}`, "invalid_prompt: no", false},
		{"incomplete", `{"type":"response.incomplete","response":{"id":"r","status":"incomplete","output":[],` +
			`"incomplete_details":{"reason":"max_output_tokens"}}}`, "the response is incomplete: max_output_tokens", false},
		{"error event", `{"type":"error","code":"rate_limit_exceeded","message":"too many"}`, "rate_limit_exceeded: too many", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := sseServer(t, delta, tc.event)
			resp, err := m.Stream(testCtx(t, 10*time.Second), userTurn("hi"), func(string) {})
			me, ok := errors.AsType[*ModelError](err)
			if !ok || me.Message != tc.message || me.Retryable != tc.retryable || me.StatusCode != 0 || resp.Content != "Hel" {
				t.Fatalf("Stream = %+v, %#v: want ModelError %q (retryable %v)", resp, err, tc.message, tc.retryable)
			}
		})
	}
	// And a stream that ends without any terminal event is a cut.
	m := sseServer(t, delta)
	if _, err := m.Stream(testCtx(t, 10*time.Second), userTurn("hi"), func(string) {}); !Retryable(err) {
		t.Fatalf("stream without response.completed: %v, want a retryable cut", err)
	}
}

func TestResponsesResolveFromEnvironment(t *testing.T) {
	fake := startResolveFake(t)
	var cache modelCache
	for range resolveCalls {
		m, err := cache.get(OpenAIResponses{ID: "fake-model"})
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		streamOnce(t, m)
	}
	// The pointer form, and OpenAIChat, share the one cached client.
	pm, err := cache.get(&OpenAIResponses{ID: "fake-model"})
	if err != nil {
		t.Fatalf("get pointer: %v", err)
	}
	chat, err := cache.get(OpenAIChat{ID: "fake-model"})
	if err != nil {
		t.Fatalf("get chat: %v", err)
	}
	if pm.(OpenAIResponses).Client != chat.(OpenAIChat).Client {
		t.Error("OpenAIResponses and OpenAIChat got different clients for one environment")
	}
	if got := fake.Connections(); got > 2 {
		t.Fatalf("%d model calls opened %d TCP connections, want 1 (a client per call, or no drain?)", resolveCalls, got)
	}
	resolved, err := OpenAIResponses{ID: "fake-model"}.Resolve()
	if err != nil || resolved.Client == nil {
		t.Fatalf("Resolve = %+v, %v", resolved, err)
	}
	streamOnce(t, resolved)
	streamOnce(t, OpenAIResponses{ID: "fake-model"}) // a direct call with a nil Client works too
	for _, r := range fake.Requests() {
		if r.API != "responses" {
			t.Fatalf("request %d went to %q, want the Responses API", r.Seq, r.API)
		}
	}

	t.Setenv("OPENAI_BASE_URL", "")
	if _, err := (OpenAIResponses{ID: "x"}).Resolve(); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("Resolve without key or base URL = %v, want run.ErrInvalidArgument", err)
	}
	if _, err := cache.get(OpenAIResponses{ID: "x"}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("get without key or base URL = %v, want run.ErrInvalidArgument", err)
	}
	_, err = OpenAIResponses{ID: "x"}.Stream(t.Context(), &ModelRequest{}, func(string) {})
	if me, ok := errors.AsType[*ModelError](err); !ok || me.Retryable || !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("Stream without key or base URL = %#v, want a non-retryable ModelError wrapping ErrInvalidArgument", err)
	}
}

// migrateTemplate prepares kern's schema in pgtest's template database.
func migrateTemplate(ctx context.Context, url string) error {
	d, err := db.Open(ctx, url)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Migrate(ctx)
}

func TestResponsesAgentForegroundRun(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	d, err := db.Open(ctx, pgtest.NewMigratedDatabase(t, "kern", migrateTemplate))
	if err != nil {
		t.Fatalf("open db: %v", err)
	}
	t.Cleanup(d.Close)
	fake, m := startResponsesFake(t, nil)
	a := &Agent{Name: "assistant", Instructions: "Be brief.", Model: m, DB: d}
	out, err := a.Run(ctx, "What is the capital of France?")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if out.Status != run.StatusCompleted || out.Content != "The capital of France is Paris." {
		t.Fatalf("run = %s %q (error %q), want completed with the fake's answer", out.Status, out.Content, out.Error)
	}
	stored, err := d.GetRun(ctx, out.RunID)
	if err != nil || stored.Content != out.Content || stored.Metrics.InputTokens == 0 {
		t.Errorf("stored run = %+v, %v", stored, err)
	}
	r := fake.Requests()[0]
	if r.API != "responses" || r.LastUserMessage() != "What is the capital of France?" ||
		len(r.Messages) == 0 || r.Messages[0].Role != "system" || r.Messages[0].Content != "Be brief." {
		t.Errorf("fake saw %+v", r)
	}
}
