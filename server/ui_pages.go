package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kern-go/kern/run"
)

// maxLoggedEvents bounds the event log a run page shows: the latest ones.
const maxLoggedEvents = 300

var uiStatuses = []run.Status{run.StatusPending, run.StatusRunning, run.StatusWaiting,
	run.StatusCompleted, run.StatusError, run.StatusCancelled}

var uiFuncs = template.FuncMap{
	"ago":   ago,
	"rfc":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ms":    func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) },
	"short": func(id string) string { return shortID(id) },
	// seg escapes an id as one path segment of a URL: html/template's own
	// escaping of a URL's path leaves '/', '?' and '#' as they are, so a
	// run id or call id with them would point a link or a form elsewhere.
	"seg": url.PathEscape,
	"terminal": func(st run.Status) bool {
		return st.Terminal()
	},
}

// ago is a time relative to now, as people read it ("3 min ago").
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + roughly(-d)
	case d < 5*time.Second:
		return "just now"
	}
	return roughly(d) + " ago"
}

func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:8] + "…" + id[len(id)-4:]
	}
	return id
}

// uiRuns is the run list: filters, a page, the next page's link. With
// ?fragment=1 it answers the table body alone, which app.js swaps in.
func (s *Server) uiRuns(w http.ResponseWriter, r *http.Request, v *uiVisit) {
	q := r.URL.Query()
	p := run.ListParams{AgentName: q.Get("agent"), SessionID: q.Get("session_id"), Name: q.Get("name"),
		Cursor: q.Get("cursor"), Limit: 25}
	status := q.Get("status")
	if status != "" {
		p.Statuses = []run.Status{run.Status(status)}
	}
	res, err := v.t.ListRuns(r.Context(), p)
	if err != nil {
		if errors.Is(err, run.ErrInvalidArgument) {
			s.uiError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		s.writeError(w, r, err)
		return
	}
	next := ""
	if res.NextCursor != "" {
		nq := url.Values{}
		for k, vs := range q {
			if k != "cursor" && k != "fragment" {
				nq[k] = vs
			}
		}
		nq.Set("cursor", res.NextCursor)
		next = "/ui/runs?" + nq.Encode()
	}
	data := v.page("Runs")
	for k, val := range map[string]any{"Runs": res.Runs, "Next": next, "Statuses": uiStatuses, "Status": status,
		"Agent": p.AgentName, "Session": p.SessionID, "Name": p.Name, "Paged": p.Cursor != ""} {
		data[k] = val
	}
	if q.Get("fragment") == "1" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := s.pages["runs.html"].ExecuteTemplate(w, "rows", data); err != nil {
			s.log.ErrorContext(r.Context(), "kern: render rows", append(logAttrs(r), "error", err)...)
		}
		return
	}
	s.render(w, r, http.StatusOK, "runs.html", data)
}

// uiEvent is an event of the log as the page shows it.
type uiEvent struct {
	Seq  int64
	Type run.EventType
	Data string
	At   time.Time
}

// uiRun is one run: its state, the content and event log read from the
// same events (so they agree), the transcript, and forms for what can be
// done to it. app.js follows the log after the last event shown.
func (s *Server) uiRun(w http.ResponseWriter, r *http.Request, v *uiVisit) {
	id := r.PathValue("run_id")
	events, err := v.t.StoredEvents(r.Context(), id, 0)
	if err == nil {
		var out *run.Output
		if out, err = v.t.GetRun(r.Context(), id); err == nil {
			var msgs []run.Message
			if msgs, err = v.t.Messages(r.Context(), id); err == nil {
				// The runs below it: the first page of its children
				// (theirs are on their own pages).
				var children *run.ListResult
				if children, err = v.t.ListRuns(r.Context(), run.ListParams{ParentRunID: out.RunID, Limit: maxShownChildren}); err == nil {
					data := runPage(v.page("Run "+shortID(out.RunID)), out, events, msgs)
					data["Children"], data["MoreChildren"] = children.Runs, children.NextCursor != ""
					s.render(w, r, http.StatusOK, "run.html", data)
					return
				}
			}
		}
	}
	switch {
	case errors.Is(err, run.ErrNotFound):
		s.uiError(w, r, http.StatusNotFound, "Run not found.")
	case errors.Is(err, run.ErrInvalidArgument):
		s.uiError(w, r, http.StatusBadRequest, err.Error())
	default:
		s.writeError(w, r, err)
	}
}

// maxShownChildren is how many of a run's children its page lists.
const maxShownChildren = 50

func runPage(data map[string]any, out *run.Output, events []run.Event, msgs []run.Message) map[string]any {
	var content strings.Builder
	var last int64
	external := map[string]bool{} // call id → its tool is External, as the last run.waiting says
	log := make([]uiEvent, 0, min(len(events), maxLoggedEvents))
	for i, ev := range events {
		last = ev.Seq
		switch ev.Type {
		case "run.started", "run.retrying", "run.released":
			content.Reset() // an execution starts its content afresh
		case "content.delta":
			var d struct{ Delta string }
			_ = json.Unmarshal(ev.Data, &d)
			content.WriteString(d.Delta)
		case "run.waiting": // the calls of External tools take a result, not an approval
			var d struct {
				Calls []struct {
					ID       string
					External bool
				}
			}
			_ = json.Unmarshal(ev.Data, &d)
			clear(external)
			for _, c := range d.Calls {
				external[c.ID] = c.External
			}
		}
		if i >= len(events)-maxLoggedEvents {
			log = append(log, uiEvent{Seq: ev.Seq, Type: ev.Type, Data: string(ev.Data), At: ev.At})
		}
	}
	for k, v := range map[string]any{"Run": out, "Content": content.String(), "Events": log,
		"Omitted": len(events) - len(log), "LastSeq": last, "Messages": msgs, "External": external} {
		data[k] = v
	}
	return data
}

func (s *Server) uiCancel(w http.ResponseWriter, r *http.Request, v *uiVisit) {
	id := r.PathValue("run_id")
	if _, err := v.t.GetRun(r.Context(), id); err != nil {
		s.uiRunError(w, r, err)
		return
	}
	if _, err := v.t.CancelRun(r.Context(), id); err != nil {
		s.uiRunError(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/runs/"+url.PathEscape(id), http.StatusSeeOther)
}

func (s *Server) uiAnswer(w http.ResponseWriter, r *http.Request, v *uiVisit) {
	id, call := r.PathValue("run_id"), r.PathValue("call_id")
	var err error
	switch r.PathValue("answer") {
	case "approve":
		err = v.t.ApproveToolCall(r.Context(), id, call)
	case "reject":
		err = v.t.RejectToolCall(r.Context(), id, call, r.PostFormValue("reason"))
	case "result":
		err = v.t.SubmitToolResult(r.Context(), id, call, r.PostFormValue("output"))
	default:
		s.uiError(w, r, http.StatusNotFound, "No such answer.")
		return
	}
	if err != nil {
		s.uiRunError(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/runs/"+url.PathEscape(id), http.StatusSeeOther)
}

func (s *Server) uiRunError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, run.ErrNotFound):
		s.uiError(w, r, http.StatusNotFound, "Run not found.")
	case errors.Is(err, run.ErrNotWaiting):
		s.uiError(w, r, http.StatusConflict, "The run is not waiting on that call any more: it was answered already.")
	case errors.Is(err, run.ErrInvalidArgument):
		s.uiError(w, r, http.StatusBadRequest, err.Error())
	default:
		s.writeError(w, r, err)
	}
}

func (s *Server) uiSchedules(w http.ResponseWriter, r *http.Request, v *uiVisit) {
	list, err := v.t.ListSchedules(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	data := v.page("Schedules")
	data["Schedules"] = list
	s.render(w, r, http.StatusOK, "schedules.html", data)
}
