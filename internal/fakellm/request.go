package fakellm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Request is what the server received, for assertions.
//
// Messages and Tools are shared with the request log: treat them as read-only.
type Request struct {
	Seq          int // 1, 2, ... in arrival order
	Model        string
	Messages     []Message
	Stream       bool
	IncludeUsage bool     // chat: stream_options.include_usage; always true for the Responses API
	Tools        []string // names of the tools offered
	PromptTokens int      // CountTokens-based prompt size, as reported in usage
	// OutputFormat is the structured output asked for: the json_schema's
	// name (chat: response_format.json_schema.name; Responses API:
	// text.format.name), "json_object", or "" for plain text.
	OutputFormat string
	// API is the endpoint the request came to: "chat" (chat completions)
	// or "responses" (the Responses API).
	API string

	ReceivedAt time.Time
	// DoneAt is when the handler finished (cut or client gone) or, for a
	// completed response, when it was about to write the final bytes: the
	// log is updated first so a client that saw the end finds it final.
	DoneAt       time.Time
	ClientGone   bool      // the client disconnected before the response was complete
	ClientGoneAt time.Time // when the server noticed
	// Completed reports that the whole response was written: the stream up to
	// and including [DONE], the JSON body, or the full error body.
	Completed bool
	Cut       bool // the server deliberately cut the connection (Reply.CutAfter)
	Status    int  // HTTP status the server answered with (0 if none was sent)
}

// Message is one chat message of a request.
type Message struct {
	Role       string
	Content    string
	ToolCallID string
	Name       string
	ToolCalls  []ToolCall // tool calls of an assistant message, if any
}

// LastUserMessage returns the content of the last message with role "user",
// or "" if there is none.
func (r Request) LastUserMessage() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// CountTokens is the server's deterministic stand-in for a tokenizer: about
// four bytes per token, rounded up. Precision is irrelevant; stability is
// what lets tests and benchmarks assert on usage numbers.
func CountTokens(s string) int {
	return (len(s) + 3) / 4
}

// perMessageTokens mimics the few tokens of framing every chat message costs.
const perMessageTokens = 4

func promptTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += perMessageTokens + CountTokens(m.Content)
		for _, tc := range m.ToolCalls {
			n += CountTokens(tc.Name) + CountTokens(tc.Arguments)
		}
	}
	return n
}

// wireRequest is the subset of the OpenAI request body the server looks at.
type wireRequest struct {
	Model         string        `json:"model"`
	Messages      []wireMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
	Functions []struct {
		Name string `json:"name"`
	} `json:"functions"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name string `json:"name"`
		} `json:"json_schema"`
	} `json:"response_format"`
}

type wireMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCallID string          `json:"tool_call_id"`
	ToolCalls  []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// parseRequest decodes a chat completions body into a Request (without Seq
// and timestamps, which the log assigns).
func parseRequest(body []byte) (Request, error) {
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return Request{}, fmt.Errorf("decoding request body: %w", err)
	}
	req := Request{
		API:          "chat",
		Model:        w.Model,
		Stream:       w.Stream,
		IncludeUsage: w.StreamOptions != nil && w.StreamOptions.IncludeUsage,
		Messages:     make([]Message, 0, len(w.Messages)),
	}
	for i, wm := range w.Messages {
		content, err := messageContent(wm.Content)
		if err != nil {
			return Request{}, fmt.Errorf("message %d: %w", i, err)
		}
		m := Message{Role: wm.Role, Content: content, Name: wm.Name, ToolCallID: wm.ToolCallID}
		for _, tc := range wm.ToolCalls {
			m.ToolCalls = append(m.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		req.Messages = append(req.Messages, m)
	}
	for _, t := range w.Tools {
		req.Tools = append(req.Tools, t.Function.Name)
	}
	for _, f := range w.Functions {
		req.Tools = append(req.Tools, f.Name)
	}
	if rf := w.ResponseFormat; rf != nil {
		name := ""
		if rf.JSONSchema != nil {
			name = rf.JSONSchema.Name
		}
		req.OutputFormat = outputFormat(rf.Type, name)
	}
	req.PromptTokens = promptTokens(req.Messages)
	return req, nil
}

// outputFormat is Request.OutputFormat for a requested format type and
// json_schema name; a json_schema without a name still counts as asked for.
func outputFormat(typ, name string) string {
	switch typ {
	case "json_schema":
		if name == "" {
			return "json_schema"
		}
		return name
	case "json_object":
		return "json_object"
	}
	return ""
}

// messageContent flattens OpenAI's two content shapes — a string, or an array
// of parts — into plain text, for both endpoints: text parts are "text"
// (chat) or "input_text" / "output_text" (Responses API: user input, an
// earlier answer); others (images, audio, files, refusals) are dropped.
func messageContent(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("decoding content: %w", err)
		}
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("decoding content parts: %w", err)
	}
	var b bytes.Buffer
	for _, p := range parts {
		switch p.Type {
		case "text", "input_text", "output_text":
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}
