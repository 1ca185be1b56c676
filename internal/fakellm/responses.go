package fakellm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// This file parses requests to the Responses API (POST /v1/responses) into
// the same Request the chat endpoint logs, so that scripts and assertions
// work alike for both APIs. responses_stream.go plays the reply.

// errResponsesNotStreamed refuses a non-streaming Responses API request:
// kern only ever streams, and a fake that answered both ways would be one
// more wire format to keep faithful for no test that needs it.
var errResponsesNotStreamed = errors.New(`fakellm serves /v1/responses streamed only: send "stream": true`)

// wireResponsesRequest is the subset of a Responses API body the server
// looks at.
type wireResponsesRequest struct {
	Model        string          `json:"model"`
	Input        json.RawMessage `json:"input"`
	Instructions json.RawMessage `json:"instructions"`
	Stream       bool            `json:"stream"`
	Tools        []struct {
		Type string `json:"type"`
		Name string `json:"name"`
		// Chat-style nesting, which some clients send to the Responses API too.
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
	Text *struct {
		Format *struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"format"`
	} `json:"text"`
}

// wireItem is one input item: a message (type "message" or none, with role
// and content), a function_call (an earlier turn's tool call) or a
// function_call_output (a tool's result).
type wireItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// parseResponsesRequest decodes a Responses API body into a Request (without
// Seq and timestamps, which the log assigns). instructions become a leading
// system message; function_call items become the ToolCalls of an assistant
// message (joining the assistant message right before them, as the chat API
// carries text and calls in one message); function_call_output items become
// "tool" messages. Item types the fake does not model (reasoning, images,
// built-in tool calls) are skipped. A non-streaming request is refused.
func parseResponsesRequest(body []byte) (Request, error) {
	var w wireResponsesRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return Request{}, fmt.Errorf("decoding request body: %w", err)
	}
	if !w.Stream {
		return Request{}, errResponsesNotStreamed
	}
	req := Request{API: "responses", Model: w.Model, Stream: true, IncludeUsage: true}
	instructions, err := messageContent(w.Instructions)
	if err != nil {
		return Request{}, fmt.Errorf("instructions: %w", err)
	}
	if instructions != "" {
		req.Messages = append(req.Messages, Message{Role: "system", Content: instructions})
	}
	msgs, err := inputMessages(w.Input)
	if err != nil {
		return Request{}, err
	}
	req.Messages = append(req.Messages, msgs...)
	for _, t := range w.Tools {
		switch {
		case t.Name != "":
			req.Tools = append(req.Tools, t.Name)
		case t.Function != nil && t.Function.Name != "":
			req.Tools = append(req.Tools, t.Function.Name)
		default: // a built-in tool (web_search, …): its type is its name
			req.Tools = append(req.Tools, t.Type)
		}
	}
	if w.Text != nil && w.Text.Format != nil {
		req.OutputFormat = outputFormat(w.Text.Format.Type, w.Text.Format.Name)
	}
	req.PromptTokens = promptTokens(req.Messages)
	return req, nil
}

// inputMessages turns the input — a string (one user message) or a list of
// items — into chat messages.
func inputMessages(raw json.RawMessage) ([]Message, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("decoding input: %w", err)
		}
		return []Message{{Role: "user", Content: s}}, nil
	}
	var items []wireItem
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("decoding input items: %w", err)
	}
	msgs := make([]Message, 0, len(items))
	// afterAssistant: the previous item was an assistant message or a call,
	// so a function_call joins that message.
	afterAssistant := false
	for i, it := range items {
		switch it.Type {
		case "", "message":
			content, err := messageContent(it.Content)
			if err != nil {
				return nil, fmt.Errorf("input item %d: %w", i, err)
			}
			if it.Role == "" {
				return nil, fmt.Errorf("input item %d: message without role", i)
			}
			msgs = append(msgs, Message{Role: it.Role, Content: content})
			afterAssistant = it.Role == "assistant"
		case "function_call":
			tc := ToolCall{ID: it.CallID, Name: it.Name, Arguments: it.Arguments}
			if n := len(msgs); afterAssistant && n > 0 {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, tc)
			} else {
				msgs = append(msgs, Message{Role: "assistant", ToolCalls: []ToolCall{tc}})
			}
			afterAssistant = true
		case "function_call_output":
			output, err := messageContent(it.Output)
			if err != nil {
				return nil, fmt.Errorf("input item %d output: %w", i, err)
			}
			msgs = append(msgs, Message{Role: "tool", ToolCallID: it.CallID, Content: output})
			afterAssistant = false
		default:
			afterAssistant = false
		}
	}
	return msgs, nil
}
