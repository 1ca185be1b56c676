package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/kern-go/kern/run"
)

// OpenAIChat talks to any OpenAI-compatible chat-completions endpoint
// (OpenAI, Ollama, vLLM, kern's own fake server) through go-openai,
// streaming with usage reporting.
//
// A nil Client means: a client from the environment (see Resolve). Agents
// and Workers build it once and reuse it, with its connection pool, for
// every run. Calling Stream directly on an OpenAIChat with a nil Client
// builds a throwaway client for that one call: it works, but pays a TCP (and
// TLS) handshake each time; call Resolve once and keep the result instead.
type OpenAIChat struct {
	Client *openai.Client
	ID     string // model id, e.g. "gpt-5-mini"
}

// NewOpenAIClient returns a go-openai client for an OpenAI-compatible base
// URL such as "http://127.0.0.1:8089/v1"; an empty baseURL means OpenAI's.
// An empty apiKey sends no Authorization header, which is what local
// endpoints without authentication expect.
func NewOpenAIClient(apiKey, baseURL string) *openai.Client {
	c, _ := newOpenAIClient(apiKey, baseURL)
	return c
}

// newOpenAIClient is NewOpenAIClient that also returns the client's
// transport, so that whoever owns the client can close its idle connections
// when it stops using it.
func newOpenAIClient(apiKey, baseURL string) (*openai.Client, *http.Transport) {
	cfg := openai.DefaultConfig(apiKey)
	if baseURL != "" {
		cfg.BaseURL = strings.TrimRight(baseURL, "/")
	}
	t := newModelTransport()
	// The transport reads Retry-After, which go-openai's errors do not carry.
	cfg.HTTPClient = &http.Client{Transport: retryAfterTransport{base: streamBodyTransport{base: t}}}
	return openai.NewClientWithConfig(cfg), t
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

// go-openai stops reading a stream at its "data: [DONE]" line and closes
// the body, usually before net/http has read the chunked terminator that
// follows it. A body closed before its end takes its connection with it, so
// without help even a shared client opened new TCP (and TLS) connections —
// up to 7 for the 20 sequential calls of TestResolveReusesOneConnection,
// depending on whether the terminator happened to arrive with [DONE].
// streamBodyTransport hands Stream the body, and Stream drains the few
// bytes left after [DONE].
const (
	// drainTimeout bounds the wait for the terminator, which a server sends
	// right after [DONE]; a server that keeps the stream open past it costs
	// its connection, as before, not more than this much time.
	drainTimeout = 100 * time.Millisecond
	// maxDrainBytes is more than a terminator and trailers; anything longer
	// is not worth reading to save a connection.
	maxDrainBytes = 4 << 10
)

type streamBodyKey struct{}

// streamBody is where streamBodyTransport leaves the response body for the
// Stream call whose context carries it. Both run in Stream's goroutine.
type streamBody struct{ body io.Reader }

func withStreamBody(ctx context.Context) (context.Context, *streamBody) {
	b := &streamBody{}
	return context.WithValue(ctx, streamBodyKey{}, b), b
}

// drain reads what is left of a finished stream's body, so that closing it
// returns the connection to the pool. cancel cancels the request's context,
// which ends a read that waits too long (and then closes the connection).
func (b *streamBody) drain(cancel context.CancelFunc) {
	if b.body == nil {
		return
	}
	t := time.AfterFunc(drainTimeout, cancel)
	defer t.Stop()
	_, _ = io.CopyN(io.Discard, b.body, maxDrainBytes)
}

// streamBodyTransport records response bodies in their request's
// streamBody, if it has one.
type streamBodyTransport struct{ base http.RoundTripper }

func (t streamBodyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		if b, ok := req.Context().Value(streamBodyKey{}).(*streamBody); ok {
			b.body = resp.Body
		}
	}
	return resp, err
}

// Resolve returns m with a Client built from the environment if it has none:
// OPENAI_BASE_URL, when set, is the endpoint (Ollama, vLLM, cmd/fakellm, …)
// and OPENAI_API_KEY is sent if set, not required; without OPENAI_BASE_URL
// the endpoint is OpenAI's, which needs OPENAI_API_KEY. The error wraps
// run.ErrInvalidArgument. An m that has a Client is returned as is.
//
// Keep the result: each call builds a new client with its own connections.
func (m OpenAIChat) Resolve() (OpenAIChat, error) {
	if m.Client != nil {
		return m, nil
	}
	env, err := readOpenAIEnv()
	if err != nil {
		return m, fmt.Errorf("kern: %w", err)
	}
	m.Client, _ = newOpenAIClient(env.apiKey, env.baseURL)
	return m, nil
}

// openAIEnv is the part of the environment a nil-Client OpenAIChat uses.
// It is comparable: modelCache keys its client on it.
type openAIEnv struct {
	apiKey, baseURL string
}

// readOpenAIEnv applies the environment rules documented at Resolve.
func readOpenAIEnv() (openAIEnv, error) {
	// Trimmed: a stray newline from `export KEY=$(cat file)`-style setups
	// would otherwise end up in a header, or make "unset" look set.
	env := openAIEnv{
		apiKey:  strings.TrimSpace(os.Getenv("OPENAI_API_KEY")),
		baseURL: strings.TrimSpace(os.Getenv("OPENAI_BASE_URL")),
	}
	// Only OpenAI itself is known to need a key. A local endpoint usually
	// has no authentication at all, and demanding a dummy key for it only
	// teaches people to set fake secrets.
	if env.apiKey == "" && env.baseURL == "" {
		return env, fmt.Errorf("%w: OPENAI_API_KEY is not set: OpenAI's API needs one "+
			"(for a local OpenAI-compatible endpoint set OPENAI_BASE_URL instead, e.g. http://127.0.0.1:8089/v1; it needs no key)",
			run.ErrInvalidArgument)
	}
	return env, nil
}

// Stream implements Model.
func (m OpenAIChat) Stream(ctx context.Context, req *ModelRequest, onDelta func(string)) (*ModelResponse, error) {
	if m.ID == "" {
		return nil, &ModelError{Message: "OpenAIChat.ID (the model id) is empty"}
	}
	chatReq := openai.ChatCompletionRequest{
		Model:         m.ID,
		Messages:      toOpenAIMessages(req.Messages),
		Tools:         toOpenAITools(req.Tools),
		Stream:        true,
		StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	}
	if req.OutputSchema != nil {
		schema, err := outputSchemaJSON(req.OutputSchema)
		if err != nil {
			return nil, err
		}
		// Not strict: OpenAI's strict mode accepts only schemas whose every
		// property is required and whose objects forbid additional ones,
		// which an arbitrary OutputSchema need not be.
		chatReq.ResponseFormat = &openai.ChatCompletionResponseFormat{
			Type:       openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: outputSchemaName, Schema: schema},
		}
	}
	call, err := openStreamCall(ctx, m.Client)
	if err != nil {
		return nil, err
	}
	defer call.end() // runs after stream.Close below
	stream, err := call.client.CreateChatCompletionStream(call.ctx, chatReq)
	if err != nil {
		return nil, call.failed(ctx, err)
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
			call.drain()
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

// streamCall is what both adapters set up around one streamed request: the
// client, a context that records Retry-After and bounds the drain of the
// response body, and the cleanup, in the order it must run.
type streamCall struct {
	client     *openai.Client
	ctx        context.Context
	retryAfter *retryAfterRecord
	body       *streamBody
	cancel     context.CancelFunc
	release    func()
}

func openStreamCall(ctx context.Context, c *openai.Client) (*streamCall, error) {
	client, release, err := callClient(c)
	if err != nil {
		return nil, err
	}
	callCtx, retryAfter := withRetryAfterRecord(ctx)
	// Cancelled only to bound body.drain; results are judged by ctx.
	callCtx, cancel := context.WithCancel(callCtx)
	callCtx, body := withStreamBody(callCtx)
	return &streamCall{client: client, ctx: callCtx, retryAfter: retryAfter, body: body, cancel: cancel, release: release}, nil
}

// end releases the call. Defer it before the stream's Close, so it runs
// after: cancelling before the close would drop the connection.
func (s *streamCall) end() {
	s.cancel()
	s.release()
}

// drain reads the rest of the response body, bounded, so the connection
// goes back to the pool.
func (s *streamCall) drain() { s.body.drain(s.cancel) }

// failed is the ModelError of a request that could not be made.
func (s *streamCall) failed(ctx context.Context, err error) error {
	return withRetryAfter(modelError(ctx, err), s.retryAfter)
}

// callClient returns the client a Stream call uses: client, or for a nil
// one — a call not made through an Agent, which resolves once (see
// modelCache) — a client from the environment for this call only. release
// closes that client's connection when the call ends rather than leaving it
// idle, so repeated direct calls cost a handshake each but do not pile up
// connections; call it after closing the stream.
func callClient(client *openai.Client) (_ *openai.Client, release func(), _ error) {
	if client != nil {
		return client, func() {}, nil
	}
	env, err := readOpenAIEnv()
	if err != nil {
		return nil, nil, &ModelError{Message: err.Error(), Err: err}
	}
	client, t := newOpenAIClient(env.apiKey, env.baseURL)
	return client, t.CloseIdleConnections, nil
}

// outputSchemaName names the JSON Schema of a structured-output request;
// both APIs require a name, and kern asks for one answer only.
const outputSchemaName = "output"

// outputSchemaJSON encodes a ModelRequest.OutputSchema for the request body.
// Encoded here, not by go-openai, so that a schema that cannot be encoded
// is a clear, non-retryable error rather than a failed "connection".
func outputSchemaJSON(schema map[string]any) (json.RawMessage, error) {
	b, err := json.Marshal(schema)
	if err != nil {
		return nil, &ModelError{Message: "OutputSchema is not valid JSON: " + err.Error(), Err: err}
	}
	return b, nil
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
		var params any = t.Parameters
		if t.Parameters == nil {
			// A tool without parameters: "parameters": null is refused by
			// OpenAI's API, an empty object schema is not.
			params = map[string]any{"type": "object", "properties": map[string]any{}}
		}
		out = append(out, openai.Tool{
			Type: openai.ToolTypeFunction,
			Function: &openai.FunctionDefinition{
				Name:        t.Name,
				Description: t.Description,
				Parameters:  params,
			},
		})
	}
	return out
}

var _ Model = OpenAIChat{}
