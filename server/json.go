package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// errBodyTooLarge, errMediaType: what decodeBody refuses besides bad JSON.
var (
	errBodyTooLarge = errors.New("body too large")
	errMediaType    = errors.New("unsupported media type")
)

// decodeBody reads r's JSON body into v: one object, no unknown fields, at
// most s.cfg.MaxBodyBytes. An empty body is allowed when optional. It
// writes the problem itself and returns false when it refuses.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	err := decodeJSON(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), r.Header.Get("Content-Type"), v, optional)
	switch {
	case err == nil:
		return true
	case errors.Is(err, errBodyTooLarge):
		writeProblem(w, http.StatusRequestEntityTooLarge, problemTooLarge, "Body too large",
			fmt.Sprintf("the request body is more than %d bytes", s.cfg.MaxBodyBytes))
	case errors.Is(err, errMediaType):
		writeProblem(w, http.StatusUnsupportedMediaType, problemMediaType, "Unsupported media type", err.Error())
	default:
		writeProblem(w, http.StatusBadRequest, problemInvalid, "Invalid argument", err.Error())
	}
	return false
}

// decodeJSON is decodeBody's parsing, apart from HTTP so it can be fuzzed.
func decodeJSON(body io.Reader, contentType string, v any, optional bool) error {
	data, err := io.ReadAll(body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errBodyTooLarge
	}
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return errors.New("the body is empty: send a JSON object")
	}
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil || (mt != "application/json" && !(len(mt) > 5 && mt[len(mt)-5:] == "+json")) {
			return fmt.Errorf("%w: send application/json, not %q", errMediaType, contentType)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("%s: a JSON %s where %s belongs", typeErr.Field, typeErr.Value, jsonKind(typeErr.Type.Kind()))
		}
		if typeErr != nil {
			return fmt.Errorf("the body is a JSON %s, not an object", typeErr.Value)
		}
		return fmt.Errorf("the body is not the expected JSON object: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errors.New("the body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

// jsonKind names what a Go field of kind k takes, in JSON's words.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return "a value"
	}
	return "another type"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// runJSON is a run as db.MarshalRun writes it.
func runJSON(out *run.Output) (json.RawMessage, error) {
	if out == nil {
		return json.RawMessage("null"), nil
	}
	return db.MarshalRun(out)
}

type messageJSON struct {
	Seq        int            `json:"seq"`
	Role       string         `json:"role"`
	Content    string         `json:"content"`
	ToolCalls  []toolCallJSON `json:"tool_calls"`
	ToolCallID string         `json:"tool_call_id"`
	At         time.Time      `json:"at"`
}

type toolCallJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func messagesJSON(ms []run.Message) []messageJSON {
	out := make([]messageJSON, len(ms))
	for i, m := range ms {
		out[i] = messageJSON{Seq: m.Seq, Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID,
			At: m.At.UTC(), ToolCalls: make([]toolCallJSON, len(m.ToolCalls))}
		for j, c := range m.ToolCalls {
			out[i].ToolCalls[j] = toolCallJSON{ID: c.ID, Name: c.Name, Arguments: c.Arguments}
		}
	}
	return out
}

// ScheduleJSON is a schedule as the HTTP API shows it (the openapi.json
// Schedule object); the CLI prints the same (ScheduleBody).
type ScheduleJSON struct {
	Name      string         `json:"name"`
	Agent     string         `json:"agent"`
	Prompt    string         `json:"prompt"`
	Cron      string         `json:"cron"`
	Timezone  string         `json:"timezone"`
	SessionID string         `json:"session_id"`
	Metadata  map[string]any `json:"metadata"`
	Paused    bool           `json:"paused"`
	NextRunAt time.Time      `json:"next_run_at"`
	LastRunID string         `json:"last_run_id"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// ScheduleBody is s as the HTTP API shows it.
func ScheduleBody(s *run.Schedule) ScheduleJSON {
	j := ScheduleJSON{Name: s.Name, Agent: s.AgentName, Prompt: s.Prompt, Cron: s.Cron, Timezone: s.Timezone,
		SessionID: s.SessionID, Metadata: s.Metadata, Paused: s.Paused, NextRunAt: s.NextRunAt,
		LastRunID: s.LastRunID, CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC()}
	if j.Metadata == nil {
		j.Metadata = map[string]any{}
	}
	return j
}
