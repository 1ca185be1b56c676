package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// OpenAIChat talks to any OpenAI-compatible chat-completions endpoint
// (OpenAI, Ollama, vLLM, kern's own fake server) through go-openai,
// streaming with usage reporting.
//
// A nil Client means: OPENAI_API_KEY and, when set, OPENAI_BASE_URL from the
// environment, read at each call.
type OpenAIChat struct {
	Client *openai.Client
	ID     string // model id, e.g. "gpt-5-mini"
}

// NewOpenAIClient returns a go-openai client for an OpenAI-compatible base
// URL such as "http://127.0.0.1:8089/v1"; an empty baseURL means OpenAI's.
func NewOpenAIClient(apiKey, baseURL string) *openai.Client {
	cfg := openai.DefaultConfig(apiKey)
	if baseURL != "" {
		cfg.BaseURL = strings.TrimRight(baseURL, "/")
	}
	// The transport reads Retry-After, which go-openai's errors do not carry.
	cfg.HTTPClient = &http.Client{Transport: retryAfterTransport{base: newModelTransport()}}
	return openai.NewClientWithConfig(cfg)
}

// newModelTransport is http.DefaultTransport with room to keep a connection
// per concurrent stream: the default keeps 2 idle connections per host, so a
// worker running dozens of runs against one model endpoint would open (and
// leave in TIME_WAIT) a new TCP connection for almost every call.
func newModelTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0 // no limit across hosts; per host below
	t.MaxIdleConnsPerHost = 256
	return t
}

func (m OpenAIChat) client() (*openai.Client, error) {
	if m.Client != nil {
		return m.Client, nil
	}
	key := os.Getenv("OPENAI_API_KEY")
	if key == "" {
		return nil, errors.New("OpenAIChat has no Client and OPENAI_API_KEY is not set")
	}
	return NewOpenAIClient(key, os.Getenv("OPENAI_BASE_URL")), nil
}

// Stream implements Model.
func (m OpenAIChat) Stream(ctx context.Context, req *ModelRequest, onDelta func(string)) (*ModelResponse, error) {
	if m.ID == "" {
		return nil, &ModelError{Message: "OpenAIChat.ID (the model id) is empty"}
	}
	client, err := m.client()
	if err != nil {
		return nil, &ModelError{Message: err.Error(), Err: err}
	}
	callCtx, retryAfter := withRetryAfterRecord(ctx)
	stream, err := client.CreateChatCompletionStream(callCtx, openai.ChatCompletionRequest{
		Model:         m.ID,
		Messages:      toOpenAIMessages(req.Messages),
		Tools:         toOpenAITools(req.Tools),
		Stream:        true,
		StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	})
	if err != nil {
		return nil, withRetryAfter(modelError(ctx, err), retryAfter)
	}
	defer stream.Close()

	var (
		resp    ModelResponse
		content strings.Builder
		calls   = map[int]*ToolCall{}
	)
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			resp.Content = content.String()
			return &resp, modelError(ctx, err)
		}
		if chunk.Usage != nil {
			resp.Usage = Usage{
				InputTokens:  chunk.Usage.PromptTokens,
				OutputTokens: chunk.Usage.CompletionTokens,
				TotalTokens:  chunk.Usage.TotalTokens,
			}
		}
		for _, choice := range chunk.Choices {
			if choice.Delta.Content != "" {
				content.WriteString(choice.Delta.Content)
				onDelta(choice.Delta.Content)
			}
			for _, tc := range choice.Delta.ToolCalls {
				assembleToolCall(calls, tc)
			}
			if choice.FinishReason != "" {
				resp.FinishReason = string(choice.FinishReason)
			}
		}
	}
	resp.Content = content.String()
	resp.ToolCalls = sortedToolCalls(calls)
	if ctx.Err() != nil {
		return &resp, context.Cause(ctx)
	}
	// go-openai reports a connection cut between events as a clean EOF; a
	// real answer always carries a finish reason, a truncated one does not.
	if resp.FinishReason == "" {
		return &resp, &ModelError{Message: errStreamCut, Retryable: true}
	}
	return &resp, nil
}

// errStreamCut is the message of a stream that broke off mid-answer.
const errStreamCut = "the response stream ended before the answer was finished"

// assembleToolCall merges one streamed fragment into the call at its index.
func assembleToolCall(calls map[int]*ToolCall, tc openai.ToolCall) {
	idx := len(calls)
	if tc.Index != nil {
		idx = *tc.Index
	}
	call := calls[idx]
	if call == nil {
		call = &ToolCall{}
		calls[idx] = call
	}
	if tc.ID != "" {
		call.ID = tc.ID
	}
	if tc.Function.Name != "" {
		call.Name += tc.Function.Name
	}
	call.Arguments += tc.Function.Arguments
}

func sortedToolCalls(calls map[int]*ToolCall) []ToolCall {
	if len(calls) == 0 {
		return nil
	}
	idx := make([]int, 0, len(calls))
	for i := range calls {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]ToolCall, 0, len(idx))
	for _, i := range idx {
		out = append(out, *calls[i])
	}
	return out
}

// modelError turns go-openai's errors into a ModelError a person can read.
// A done ctx wins: the call was abandoned on purpose, not failed.
func modelError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &ModelError{Message: errStreamCut, Retryable: true, Err: err}
	}
	// go-openai wraps an error body it cannot fully parse (say {"error":
	// "overloaded"}) as a RequestError around an APIError without status:
	// take the status from whichever has it, the message likewise.
	var status int
	var msg string
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		status, msg = apiErr.HTTPStatusCode, apiErr.Message
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		if status == 0 {
			status = reqErr.HTTPStatusCode
		}
		if msg == "" {
			msg = strings.TrimSpace(string(reqErr.Body))
		}
		if msg == "" && reqErr.Err != nil && apiErr == nil {
			msg = reqErr.Err.Error()
		}
	}
	if apiErr != nil || reqErr != nil {
		if msg == "" {
			msg = http.StatusText(status)
		}
		if msg == "" {
			msg = "the provider returned an error without a message"
		}
		return &ModelError{StatusCode: status, Message: msg, Retryable: retryableStatus(status), Err: err}
	}
	// No HTTP status: the connection failed (refused, reset, DNS).
	return &ModelError{Message: err.Error(), Retryable: true, Err: err}
}

func withRetryAfter(err error, rec *retryAfterRecord) error {
	var me *ModelError
	if errors.As(err, &me) {
		me.RetryAfter = time.Duration(rec.d.Load())
	}
	return err
}

func toOpenAIMessages(msgs []Message) []openai.ChatCompletionMessage {
	out := make([]openai.ChatCompletionMessage, 0, len(msgs))
	for _, m := range msgs {
		om := openai.ChatCompletionMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			om.ToolCalls = append(om.ToolCalls, openai.ToolCall{
				ID:       tc.ID,
				Type:     openai.ToolTypeFunction,
				Function: openai.FunctionCall{Name: tc.Name, Arguments: tc.Arguments},
			})
		}
		out = append(out, om)
	}
	return out
}

func toOpenAITools(tools []Tool) []openai.Tool {
	if len(tools) == 0 {
		return nil
	}
	out := make([]openai.Tool, 0, len(tools))
	for _, t := range tools {
		out = append(out, openai.Tool{
			Type: openai.ToolTypeFunction,
			Function: &openai.FunctionDefinition{
				Name:        t.Name,
				Description: t.Description,
				Parameters:  t.Parameters,
			},
		})
	}
	return out
}

var _ Model = OpenAIChat{}
