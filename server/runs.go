package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// submitRequest is POST /v1/runs' body.
type submitRequest struct {
	Agent          string         `json:"agent"`
	Prompt         string         `json:"prompt"`
	RunID          string         `json:"run_id"`
	SessionID      string         `json:"session_id"`
	Name           string         `json:"name"`
	Metadata       map[string]any `json:"metadata"`
	Timeout        string         `json:"timeout"`
	IdempotencyKey string         `json:"idempotency_key"`
	ConcurrencyKey string         `json:"concurrency_key"`
	Delay          string         `json:"delay"`
	StartAt        string         `json:"start_at"`
	WaitTimeout    string         `json:"wait_timeout"`
	Webhook        string         `json:"webhook"`
	Priority       *int           `json:"priority"`
}

// params turns the body into a background submit, refusing what SubmitRun
// would not see as wrong: durations and times that do not parse, both a
// delay and a start time.
func (q *submitRequest) params(now time.Time) (db.SubmitParams, error) {
	p := db.SubmitParams{
		RunID: q.RunID, SessionID: q.SessionID, AgentName: q.Agent, Name: q.Name, Input: q.Prompt,
		Metadata: numbersAsGiven(q.Metadata), IdempotencyKey: q.IdempotencyKey, ConcurrencyKey: q.ConcurrencyKey,
		WebhookURL: q.Webhook, Enqueue: true,
	}
	if p.RunID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return p, fmt.Errorf("run id: %w", err)
		}
		p.RunID = id.String()
	}
	var err error
	if p.Timeout, err = duration("timeout", q.Timeout); err != nil {
		return p, err
	}
	if p.WaitTimeout, err = duration("wait_timeout", q.WaitTimeout); err != nil {
		return p, err
	}
	delay, err := duration("delay", q.Delay)
	if err != nil {
		return p, err
	}
	switch {
	case q.Delay != "" && q.StartAt != "":
		return p, fmt.Errorf("kern: %w: give delay or start_at, not both", run.ErrInvalidArgument)
	case delay > 0:
		p.StartAt = now.Add(delay)
	case q.StartAt != "":
		if p.StartAt, err = time.Parse(time.RFC3339Nano, q.StartAt); err != nil {
			return p, fmt.Errorf("kern: %w: start_at %q is not an RFC 3339 time (2026-12-01T07:00:00Z)", run.ErrInvalidArgument, q.StartAt)
		}
	}
	if q.Priority != nil {
		if *q.Priority == 0 { // SubmitRun reads 0 as the default
			return p, fmt.Errorf("kern: %w: priority 0 is not in 1..4", run.ErrInvalidArgument)
		}
		p.Priority = *q.Priority
	}
	return p, nil
}

// duration parses a Go duration field; empty is 0, negative is refused.
func duration(field, text string) (time.Duration, error) {
	if text == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, fmt.Errorf("kern: %w: %s %q is not a duration (\"90s\", \"5m\", \"1h30m\")", run.ErrInvalidArgument, field, text)
	}
	if d < 0 {
		return 0, fmt.Errorf("kern: %w: %s %q is negative", run.ErrInvalidArgument, field, text)
	}
	return d, nil
}

// numbersAsGiven turns the json.Numbers of a decoded body into int64 when
// they are integers and float64 otherwise, as encoding/json's own decoding
// would, but without rounding big integers through float64.
func numbersAsGiven(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = numberAsGiven(v)
	}
	return out
}

func numberAsGiven(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v.String()
	case map[string]any:
		return numbersAsGiven(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = numberAsGiven(e)
		}
		return out
	}
	return v
}

func (s *Server) submitRun(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	var q submitRequest
	if !s.decodeBody(w, r, &q, false) {
		return
	}
	p, err := q.params(time.Now())
	if err == nil && !s.cfg.AllowPrivateWebhooks {
		err = s.checkPublicURL(r.Context(), p.WebhookURL)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out, created, err := t.SubmitRunOrExisting(r.Context(), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusAccepted
	if !created {
		status = http.StatusOK // an earlier submit's run, by idempotency key
	}
	s.writeRun(w, r, status, out)
}

func (s *Server) writeRun(w http.ResponseWriter, r *http.Request, status int, out *run.Output) {
	body, err := runJSON(out)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if status == http.StatusAccepted {
		w.Header().Set("Location", "/v1/runs/"+url.PathEscape(out.RunID))
	}
	writeJSON(w, status, body)
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	out, err := t.GetRun(r.Context(), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeRun(w, r, http.StatusOK, out)
}

// waitRun answers once the run is terminal or waiting, or, at the timeout,
// with the run as it is then: 200 either way.
func (s *Server) waitRun(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	timeout := defaultWait
	if text := r.URL.Query().Get("timeout"); text != "" {
		d, err := duration("timeout", text)
		if err == nil && d > s.cfg.MaxWait {
			err = fmt.Errorf("kern: %w: timeout %v is more than %v", run.ErrInvalidArgument, d, s.cfg.MaxWait)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		timeout = d
	}
	id := r.PathValue("run_id")
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	out, err := t.WaitRun(ctx, id)
	if err != nil && ctx.Err() != nil && r.Context().Err() == nil {
		out, err = t.GetRun(r.Context(), id) // the timeout: the run as it is
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeRun(w, r, http.StatusOK, out)
}

type cancelResult struct {
	Cancelled bool            `json:"cancelled"`
	Run       json.RawMessage `json:"run"`
}

// cancelRun cancels, also an id with no run yet: then run is null.
func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	id := r.PathValue("run_id")
	cancelled, err := t.CancelRun(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out, err := t.GetRun(r.Context(), id)
	if err != nil && !errors.Is(err, run.ErrNotFound) {
		s.writeError(w, r, err)
		return
	}
	body, err := runJSON(out)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cancelResult{Cancelled: cancelled, Run: body})
}

type runList struct {
	Runs       []json.RawMessage `json:"runs"`
	NextCursor string            `json:"next_cursor"`
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	q := r.URL.Query()
	p := run.ListParams{AgentName: q.Get("agent"), SessionID: q.Get("session_id"), Name: q.Get("name"), Cursor: q.Get("cursor"),
		ParentRunID: q.Get("parent_run_id")}
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				p.Statuses = append(p.Statuses, run.Status(st))
			}
		}
	}
	if text := q.Get("limit"); text != "" {
		n, err := strconv.Atoi(text)
		if err != nil || n < 1 {
			s.writeError(w, r, fmt.Errorf("kern: %w: limit %q is not a whole number from 1", run.ErrInvalidArgument, text))
			return
		}
		p.Limit = n
	}
	res, err := t.ListRuns(r.Context(), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list := runList{Runs: make([]json.RawMessage, len(res.Runs)), NextCursor: res.NextCursor}
	for i, out := range res.Runs {
		if list.Runs[i], err = runSummaryJSON(out); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, list)
}

// previewRunes is how much of a run's content a list shows: enough to
// tell runs apart, where the whole content of 50 long answers would make a
// page of megabytes. GET /v1/runs/{id} has all of it.
const previewRunes = 200

// runSummaryExtra is what a run in a list has besides a run's fields.
type runSummaryExtra struct {
	ContentTruncated bool `json:"content_truncated"` // content is the first previewRunes characters
	ContentBytes     int  `json:"content_bytes"`     // the length of the whole content, in bytes
}

// runSummaryJSON is a run as a list shows it (schema RunSummary): a run's
// JSON with content cut to previewRunes characters, and runSummaryExtra.
func runSummaryJSON(out *run.Output) (json.RawMessage, error) {
	short := *out
	extra := runSummaryExtra{ContentBytes: len(out.Content)}
	if i := runeOffset(out.Content, previewRunes); i < len(out.Content) {
		short.Content, extra.ContentTruncated = out.Content[:i], true
	}
	body, err := runJSON(&short)
	if err != nil {
		return nil, err
	}
	more, err := json.Marshal(extra)
	if err != nil {
		return nil, err
	}
	// Both are objects: {…run…} and {…extra…} make {…run…,…extra…}.
	return append(append(body[:len(body)-1:len(body)-1], ','), more[1:]...), nil
}

// runeOffset is the byte offset of s's n-th rune, len(s) when s is shorter.
func runeOffset(s string, n int) int {
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	ms, err := t.Messages(r.Context(), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": messagesJSON(ms)})
}

// The answers to a waiting run; each answers with the run after it.

type rejectBody struct {
	Reason string `json:"reason"`
}

type toolResultBody struct {
	Output *string `json:"output"`
}

func (s *Server) approveToolCall(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	s.answered(w, r, t, t.ApproveToolCall(r.Context(), r.PathValue("run_id"), r.PathValue("call_id")))
}

func (s *Server) rejectToolCall(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	var q rejectBody
	if !s.decodeBody(w, r, &q, true) {
		return
	}
	s.answered(w, r, t, t.RejectToolCall(r.Context(), r.PathValue("run_id"), r.PathValue("call_id"), q.Reason))
}

func (s *Server) submitToolResult(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	var q toolResultBody
	if !s.decodeBody(w, r, &q, false) {
		return
	}
	if q.Output == nil {
		s.writeError(w, r, fmt.Errorf("kern: %w: output is missing", run.ErrInvalidArgument))
		return
	}
	s.answered(w, r, t, t.SubmitToolResult(r.Context(), r.PathValue("run_id"), r.PathValue("call_id"), *q.Output))
}

func (s *Server) answered(w http.ResponseWriter, r *http.Request, t *db.TenantDB, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.getRun(w, r, t)
}
