package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	openai "github.com/sashabaranov/go-openai"
)

// OpenAIResponses talks to the OpenAI Responses API (POST /v1/responses,
// streamed) through go-openai's CreateResponseStream. Function calls and
// their outputs travel as input items: the whole transcript is sent with
// every turn, and nothing depends on responses stored by the provider.
//
// A nil Client means: a client from the environment, exactly as for
// OpenAIChat (see Resolve); Agents and Workers build it once and reuse it.
// Errors are the same *ModelError values OpenAIChat returns.
type OpenAIResponses struct {
	Client *openai.Client
	ID     string // model id, e.g. "gpt-5-mini"
}

// Resolve returns m with a Client built from the environment if it has
// none, by the rules of OpenAIChat.Resolve. The error wraps
// run.ErrInvalidArgument. An m that has a Client is returned as is.
//
// Keep the result: each call builds a new client with its own connections.
func (m OpenAIResponses) Resolve() (OpenAIResponses, error) {
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

// Stream implements Model.
func (m OpenAIResponses) Stream(ctx context.Context, req *ModelRequest, onDelta func(string)) (*ModelResponse, error) {
	if m.ID == "" {
		return nil, &ModelError{Message: "OpenAIResponses.ID (the model id) is empty"}
	}
	respReq, err := toResponsesRequest(m.ID, req)
	if err != nil {
		return nil, err
	}
	call, err := openStreamCall(ctx, m.Client)
	if err != nil {
		return nil, err
	}
	defer call.end() // runs after stream.Close below
	stream, err := call.client.CreateResponseStream(call.ctx, respReq)
	if err != nil {
		return nil, call.failed(ctx, err)
	}
	defer stream.Close()

	var (
		resp    ModelResponse
		content strings.Builder
		calls   = newResponseCalls()
		done    bool  // a terminal event arrived
		failure error // what a failed or incomplete response reported
	)
	for !done {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			resp.Content = content.String()
			return &resp, modelError(ctx, err)
		}
		switch ev.Type {
		case openai.ResponseStreamEventOutputTextDelta:
			if ev.Delta != "" {
				content.WriteString(ev.Delta)
				onDelta(ev.Delta)
			}
		case openai.ResponseStreamEventOutputItemAdded, openai.ResponseStreamEventOutputItemDone:
			if ev.Item != nil && ev.Item.Type == "function_call" {
				calls.item(ev.OutputIndex, ev.Item)
			}
		case openai.ResponseStreamEventFunctionArgumentsDelta:
			calls.get(ev.OutputIndex, ev.ItemID).Arguments += ev.Delta
		case openai.ResponseStreamEventFunctionArgumentsDone:
			// The whole arguments, which supersede the deltas.
			calls.get(ev.OutputIndex, ev.ItemID).Arguments = ev.Arguments
		case openai.ResponseStreamEventCompleted:
			done = true
			resp.FinishReason = "stop"
			if ev.Response != nil && ev.Response.Usage != nil {
				resp.Usage = Usage{
					InputTokens:  ev.Response.Usage.InputTokens,
					OutputTokens: ev.Response.Usage.OutputTokens,
					TotalTokens:  ev.Response.Usage.TotalTokens,
				}
			}
		case openai.ResponseStreamEventFailed, openai.ResponseStreamEventIncomplete, openai.ResponseStreamEventError:
			done = true
			failure = responseFailure(ev)
		}
	}
	if done {
		// A provider's stream ends right after its terminal event; reading
		// that end returns the connection to the pool (see drainTimeout).
		call.drain()
	}
	resp.Content = content.String()
	resp.ToolCalls = calls.sorted()
	if ctx.Err() != nil {
		return &resp, context.Cause(ctx)
	}
	if failure != nil {
		return &resp, failure
	}
	// go-openai reports a connection cut between events as a clean EOF; a
	// whole answer always ends with response.completed.
	if !done {
		return &resp, &ModelError{Message: errStreamCut, Retryable: true}
	}
	if len(resp.ToolCalls) > 0 {
		resp.FinishReason = "tool_calls"
	}
	return &resp, nil
}

// responseFailure is the ModelError of a response.failed,
// response.incomplete or error event: the stream itself was a 200, so there
// is no HTTP status, only the provider's code and message.
func responseFailure(ev openai.ResponseStreamEvent) error {
	code, msg := ev.Code, ev.Message
	if r := ev.Response; r != nil {
		switch {
		case r.Error != nil:
			code, msg = r.Error.Code, r.Error.Message
		case r.IncompleteDetails != nil && r.IncompleteDetails.Reason != "":
			code, msg = r.IncompleteDetails.Reason, "the response is incomplete: "+r.IncompleteDetails.Reason
		}
	}
	if ev.Error != nil && msg == "" {
		code, msg = ev.Error.Code, ev.Error.Message
	}
	if msg == "" {
		msg = "the response " + strings.TrimPrefix(string(ev.Type), "response.")
	}
	if code != "" && !strings.Contains(msg, code) {
		msg = code + ": " + msg
	}
	// An incomplete response (max_output_tokens, content_filter) ends the
	// same way every time; a failure is worth another attempt when the
	// provider blames itself or a rate limit, or gives no reason at all.
	retryable := ev.Type != openai.ResponseStreamEventIncomplete &&
		(code == "" || code == "server_error" || code == "rate_limit_exceeded")
	return &ModelError{Message: msg, Retryable: retryable}
}

// responseCalls assembles streamed function calls. Events name their item
// by id and by output index; either finds the call, so a provider that
// sends only one of them still gets each call assembled in one place, and
// two items that share an index (a provider that leaves it out) stay two
// calls. Calls are returned in output order.
type responseCalls struct {
	list    []*responseCall // in order of first event
	byID    map[string]*responseCall
	byIndex map[int]*responseCall
}

type responseCall struct {
	index  int    // output_index
	itemID string // "" until an event names it
	call   ToolCall
}

func newResponseCalls() *responseCalls {
	return &responseCalls{byID: map[string]*responseCall{}, byIndex: map[int]*responseCall{}}
}

// get returns the call of item itemID (if set) at output index idx,
// creating it if this is its first event.
func (c *responseCalls) get(idx int, itemID string) *ToolCall {
	if rc := c.byID[itemID]; itemID != "" && rc != nil {
		return &rc.call
	}
	rc := c.byIndex[idx]
	if rc == nil || (itemID != "" && rc.itemID != "" && rc.itemID != itemID) {
		rc = &responseCall{index: idx}
		c.list = append(c.list, rc)
		c.byIndex[idx] = rc
	}
	if itemID != "" {
		rc.itemID = itemID
		c.byID[itemID] = rc
	}
	return &rc.call
}

// item records what a function_call item says: the call id and name when
// it is added, and everything again when it is done.
func (c *responseCalls) item(idx int, item *openai.ResponseOutputItem) {
	call := c.get(idx, item.ID)
	if item.CallID != "" {
		call.ID = item.CallID
	}
	if item.Name != "" {
		call.Name = item.Name
	}
	if item.Arguments != "" {
		call.Arguments = item.Arguments
	}
}

func (c *responseCalls) sorted() []ToolCall {
	if len(c.list) == 0 {
		return nil
	}
	list := slices.Clone(c.list)
	slices.SortStableFunc(list, func(a, b *responseCall) int { return cmp.Compare(a.index, b.index) })
	out := make([]ToolCall, 0, len(list))
	for _, rc := range list {
		out = append(out, rc.call)
	}
	return out
}

// responsesFunctionCall is an earlier turn's function call as an input
// item. go-openai has no input type for it, and its output item type would
// omit empty arguments, which the API requires.
type responsesFunctionCall struct {
	Type      string `json:"type"` // "function_call"
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// toResponsesRequest maps a ModelRequest onto the Responses API: system
// messages become the instructions, user and assistant messages input
// message items, an assistant's tool calls function_call items and tool
// results function_call_output items, in transcript order.
func toResponsesRequest(model string, req *ModelRequest) (openai.CreateResponseRequest, error) {
	out := openai.CreateResponseRequest{Model: model, Stream: true}
	var instructions []string
	items := make([]any, 0, len(req.Messages))
	for _, m := range req.Messages {
		switch m.Role {
		case "system":
			instructions = append(instructions, m.Content)
		case "tool":
			items = append(items, openai.ResponseFunctionCallOutput{
				Type: "function_call_output", CallID: m.ToolCallID, Output: m.Content,
			})
		default:
			// An assistant turn that only called tools has no text; an
			// empty message item would be one the model never wrote.
			if m.Content != "" || len(m.ToolCalls) == 0 {
				items = append(items, openai.ResponseInputMessage{Type: "message", Role: m.Role, Content: m.Content})
			}
			for _, tc := range m.ToolCalls {
				items = append(items, responsesFunctionCall{
					Type: "function_call", CallID: tc.ID, Name: tc.Name, Arguments: tc.Arguments,
				})
			}
		}
	}
	out.Instructions = strings.Join(instructions, "\n\n")
	out.Input = items
	for _, t := range req.Tools {
		out.Tools = append(out.Tools, openai.NewResponseFunctionTool(openai.FunctionDefinition{
			Name: t.Name, Description: t.Description, Parameters: t.Parameters,
		}))
	}
	if req.OutputSchema != nil {
		schema, err := outputSchemaJSON(req.OutputSchema)
		if err != nil {
			return out, err
		}
		// Not strict, for the reason given in OpenAIChat.Stream.
		out.Text = &openai.ResponseTextConfig{Format: &openai.ResponseTextFormat{
			Type: "json_schema", Name: outputSchemaName, Schema: schema,
		}}
	}
	return out, nil
}

var _ Model = OpenAIResponses{}
