package fakellm

import (
	"encoding/json"
	"net/http"
	"time"
)

// The types below are the response shapes of the OpenAI chat completions
// API, reduced to what clients actually read.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) *usage {
	return &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

type chunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type delta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []toolCallDelta `json:"tool_calls,omitempty"`
}

type toolCallDelta struct {
	Index    int          `json:"index"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage"`
}

type completionChoice struct {
	Index        int               `json:"index"`
	Message      completionMessage `json:"message"`
	FinishReason string            `json:"finish_reason"`
}

type completionMessage struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"`
	ToolCalls []toolCallFull `json:"tool_calls,omitempty"`
}

type toolCallFull struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function functionCall `json:"function"`
}

type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// errorKind maps a status to the error type and code OpenAI uses for it, so
// clients that branch on them see familiar values.
func errorKind(status int) (typ string, code *string) {
	str := func(s string) *string { return &s }
	switch {
	case status == http.StatusUnauthorized:
		return "invalid_request_error", str("invalid_api_key")
	case status == http.StatusNotFound:
		return "invalid_request_error", str("not_found")
	case status == http.StatusTooManyRequests:
		return "requests", str("rate_limit_exceeded")
	case status >= 500:
		return "server_error", str("server_error")
	default:
		return "invalid_request_error", nil
	}
}

func errorJSON(status int, msg string) []byte {
	if msg == "" {
		msg = http.StatusText(status)
	}
	typ, code := errorKind(status)
	b, err := json.Marshal(errorBody{Error: apiError{Message: msg, Type: typ, Code: code}})
	if err != nil { // unreachable: only strings and pointers to strings
		panic(err)
	}
	return b
}

// writeError answers with an OpenAI-shaped error. It reports whether the
// whole body was written.
func writeError(w http.ResponseWriter, status int, msg, retryAfter string) bool {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_, err := w.Write(errorJSON(status, msg))
	return err == nil
}

// writeModels answers GET /v1/models with a few familiar names; the chat
// endpoint accepts any model name anyway.
func writeModels(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list"}
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for _, id := range []string{"fake-model", "gpt-4o-mini", "gpt-4o"} {
		list.Data = append(list.Data, model{ID: id, Object: "model", Created: created, OwnedBy: "fakellm"})
	}
	b, err := json.Marshal(list)
	if err != nil { // unreachable: plain strings and ints
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
