package fakellm

import (
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

func TestStreamContentAndUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		chunkSize int
		content   string
		chunks    int
	}{
		{"words", 0, "  Hello there,\nstreaming  world! ", 4},
		{"runes", 3, "héllo wörld ✓", 5},
		{"empty", 0, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, client := start(t, constant(Reply{Content: tc.content, ChunkSize: tc.chunkSize}))
			stream, err := client.CreateChatCompletionStream(timeout(t, 5*time.Second), userRequest("hi", true))
			if err != nil {
				t.Fatalf("CreateChatCompletionStream: %v", err)
			}
			defer stream.Close()
			res := drain(stream)
			if res.err != nil {
				t.Fatalf("stream error: %v", res.err)
			}
			if got := res.content.String(); got != tc.content {
				t.Errorf("content = %q, want %q", got, tc.content)
			}
			if res.chunks != tc.chunks {
				t.Errorf("content chunks = %d, want %d", res.chunks, tc.chunks)
			}
			if res.role != openai.ChatMessageRoleAssistant || res.finish != openai.FinishReasonStop {
				t.Errorf("role %q finish %q", res.role, res.finish)
			}
			reqs := s.Requests()
			if len(reqs) != 1 {
				t.Fatalf("logged %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			wantUsage := openai.Usage{
				PromptTokens:     r.PromptTokens,
				CompletionTokens: CountTokens(tc.content),
				TotalTokens:      r.PromptTokens + CountTokens(tc.content),
			}
			if res.usage == nil || res.usage.PromptTokens != wantUsage.PromptTokens ||
				res.usage.CompletionTokens != wantUsage.CompletionTokens || res.usage.TotalTokens != wantUsage.TotalTokens {
				t.Errorf("usage = %+v, want %+v", res.usage, wantUsage)
			}
			if r.PromptTokens == 0 || !r.Stream || !r.IncludeUsage || !r.Completed || r.ClientGone || r.Seq != 1 ||
				r.Model != openai.GPT4oMini || r.DoneAt.Before(r.ReceivedAt) || r.Status != 200 {
				t.Errorf("logged request = %+v", r)
			}
		})
	}
}

func TestStreamWithoutUsage(t *testing.T) {
	t.Parallel()
	_, client := start(t, constant(Reply{Content: "no usage please"}))
	req := userRequest("hi", true)
	req.StreamOptions = nil
	stream, err := client.CreateChatCompletionStream(timeout(t, 5*time.Second), req)
	if err != nil {
		t.Fatalf("CreateChatCompletionStream: %v", err)
	}
	defer stream.Close()
	res := drain(stream)
	if res.err != nil || res.content.String() != "no usage please" || res.usage != nil {
		t.Fatalf("err %v content %q usage %+v", res.err, res.content.String(), res.usage)
	}
}

func TestNonStreaming(t *testing.T) {
	t.Parallel()
	s, client := start(t, nil)
	resp, err := client.CreateChatCompletion(timeout(t, 5*time.Second), userRequest("What is the capital of France?", false))
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("choices = %+v", resp.Choices)
	}
	want := "The capital of France is Paris."
	if c := resp.Choices[0]; c.Message.Content != want || c.FinishReason != openai.FinishReasonStop || c.Message.Role != "assistant" {
		t.Errorf("choice = %+v", c)
	}
	if resp.Usage.CompletionTokens != CountTokens(want) || resp.Usage.PromptTokens == 0 ||
		resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
		t.Errorf("usage = %+v", resp.Usage)
	}
	if r := s.Requests()[0]; r.Stream || !r.Completed {
		t.Errorf("logged request = %+v", r)
	}
}

func TestPathWithoutV1(t *testing.T) {
	t.Parallel()
	s := New()
	base, stop, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	cfg := openai.DefaultConfig("test")
	cfg.BaseURL = base[:len(base)-len("/v1")]
	resp, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(timeout(t, 5*time.Second), userRequest("hello", false))
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	if got := resp.Choices[0].Message.Content; got != "Fake answer to: hello" {
		t.Errorf("content = %q", got)
	}
}

func TestToolCalls(t *testing.T) {
	t.Parallel()
	calls := []ToolCall{
		{ID: "call_weather", Name: "get_weather", Arguments: `{"city":"Paris","unit":"celsius"}`},
		{Name: "search", Arguments: `{"q":"ünïcode ✓ and more text"}`},
	}
	s, client := start(t, constant(Reply{ToolCalls: calls}))
	req := userRequest("weather?", true)
	req.Tools = []openai.Tool{
		{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: "get_weather"}},
		{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: "search"}},
	}
	// A second turn, to check tool messages are logged.
	req.Messages = append(req.Messages,
		openai.ChatCompletionMessage{Role: "assistant", ToolCalls: []openai.ToolCall{{
			ID: "call_0", Type: "function", Function: openai.FunctionCall{Name: "search", Arguments: `{}`},
		}}},
		openai.ChatCompletionMessage{Role: "tool", ToolCallID: "call_0", Content: "result"},
	)

	stream, err := client.CreateChatCompletionStream(timeout(t, 5*time.Second), req)
	if err != nil {
		t.Fatalf("CreateChatCompletionStream: %v", err)
	}
	defer stream.Close()
	res := drain(stream)
	if res.err != nil {
		t.Fatalf("stream error: %v", res.err)
	}
	if res.finish != openai.FinishReasonToolCalls {
		t.Errorf("finish = %q", res.finish)
	}
	wantIDs := []string{"call_weather", "call_1_1"}
	if len(res.toolCalls) != len(calls) {
		t.Fatalf("tool calls = %+v", res.toolCalls)
	}
	for i, tc := range res.toolCalls {
		if tc.ID != wantIDs[i] || tc.Type != openai.ToolTypeFunction || tc.Function.Name != calls[i].Name || tc.Function.Arguments != calls[i].Arguments {
			t.Errorf("tool call %d = %+v, want %+v", i, tc, calls[i])
		}
	}

	r := s.Requests()[0]
	if len(r.Tools) != 2 || r.Tools[0] != "get_weather" || r.Tools[1] != "search" {
		t.Errorf("tools = %v", r.Tools)
	}
	if len(r.Messages) != 3 || r.Messages[1].ToolCalls[0].Name != "search" || r.Messages[2].ToolCallID != "call_0" ||
		r.Messages[2].Content != "result" || r.LastUserMessage() != "weather?" {
		t.Errorf("messages = %+v", r.Messages)
	}

	// The same reply without streaming.
	req.Stream, req.StreamOptions = false, nil
	resp, err := client.CreateChatCompletion(timeout(t, 5*time.Second), req)
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	got := resp.Choices[0]
	if got.FinishReason != openai.FinishReasonToolCalls || len(got.Message.ToolCalls) != 2 ||
		got.Message.ToolCalls[0].Function.Arguments != calls[0].Arguments || got.Message.ToolCalls[1].ID != "call_2_1" {
		t.Errorf("non-streaming choice = %+v", got)
	}
}

// TestCutAfter records what go-openai reports for a stream that dies without
// [DONE]: io.ErrUnexpectedEOF (the chunked body ends without its terminator).
func TestCutAfter(t *testing.T) {
	t.Parallel()
	for _, cut := range []int{2, 50} { // 50 > chunks: cut after the last one
		s, client := start(t, constant(Reply{Content: "one two three four five", CutAfter: cut}))
		stream, err := client.CreateChatCompletionStream(timeout(t, 5*time.Second), userRequest("hi", true))
		if err != nil {
			t.Fatalf("CreateChatCompletionStream: %v", err)
		}
		res := drain(stream)
		stream.Close()
		if !errors.Is(res.err, io.ErrUnexpectedEOF) {
			t.Errorf("cut=%d: stream error = %#v, want io.ErrUnexpectedEOF", cut, res.err)
		}
		want := "one two "
		if cut > 5 {
			want = "one two three four five"
		}
		if res.content.String() != want || res.finish != "" {
			t.Errorf("cut=%d: content %q finish %q", cut, res.content.String(), res.finish)
		}
		r, ok := s.Request(1)
		if !ok || r.Completed || !r.Cut || r.ClientGone || r.DoneAt.IsZero() {
			t.Errorf("cut=%d: logged request = %+v", cut, r)
		}
	}

	// Non-streaming: the JSON body is cut in half.
	s, client := start(t, constant(Reply{Content: "one two three", CutAfter: 1}))
	_, err := client.CreateChatCompletion(timeout(t, 5*time.Second), userRequest("hi", false))
	if err == nil {
		t.Fatal("CreateChatCompletion succeeded on a cut body")
	}
	if r, _ := s.Request(1); r.Completed || !r.Cut {
		t.Errorf("logged request = %+v", r)
	}
}

func TestManyConcurrentDripStreams(t *testing.T) {
	t.Parallel()
	const n = 200
	s, client := start(t, constant(Reply{Content: LoremWords(10), Drip: 5 * time.Millisecond}))
	ctx := timeout(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			stream, err := client.CreateChatCompletionStream(ctx, userRequest("hi", true))
			if err != nil {
				errs <- err
				return
			}
			defer stream.Close()
			if res := drain(stream); res.err != nil || res.content.String() != LoremWords(10) {
				errs <- errors.Join(errors.New("bad stream"), res.err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Count() != n {
		t.Errorf("Count = %d", s.Count())
	}
	for _, r := range s.Requests() {
		if !r.Completed {
			t.Errorf("request %d not completed", r.Seq)
		}
	}
}
