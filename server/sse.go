package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// sseWriteTimeout bounds each write of an event stream: a client that
// stops reading is dropped instead of holding the stream forever.
const sseWriteTimeout = 30 * time.Second

// streamEvents is GET /v1/runs/{run_id}/events: the run's events as
// server-sent events, after Last-Event-ID or ?after=N (0 from the first),
// live until the terminal event, with a comment every HeartbeatInterval.
// A finished run with no events after the one asked for is 204.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	id := r.PathValue("run_id")
	after, err := resumeAfter(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out, err := t.GetRun(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := s.hubs.join(id)
	defer s.hubs.leave(h)
	if out.Status.Terminal() && !s.eventsAfter(w, r, h, after) {
		return
	}

	s.tel.streams.Add(r.Context(), 1)
	defer s.tel.streams.Add(context.WithoutCancel(r.Context()), -1)
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 1000\n\n")) {
		return
	}
	heartbeat := time.NewTicker(s.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	var buf bytes.Buffer
	for {
		events, done, readErr, changed := h.after(after)
		if len(events) > 0 {
			buf.Reset()
			terminal := false
			for _, ev := range events {
				buf.Write(ev.sse)
				after = ev.seq
				if terminal = ev.terminal; terminal {
					break
				}
			}
			if !write(buf.Bytes()) || terminal {
				return
			}
			continue
		}
		if done {
			if readErr != nil {
				s.log.WarnContext(r.Context(), "kern: event stream ended early", append(logAttrs(r), "error", readErr)...)
			}
			return // the client resumes with Last-Event-ID
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-heartbeat.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		}
	}
}

// eventsAfter tells whether a finished run's log, read to its end, has
// events after seq. When it has none (a stream resumed at the terminal
// event), it answers 204 No Content and returns false: EventSource stops
// reconnecting on a 204, where a 200 that ends at once would have it
// reconnect every second for ever.
func (s *Server) eventsAfter(w http.ResponseWriter, r *http.Request, h *hub, seq int64) bool {
	for {
		events, done, readErr, changed := h.after(seq)
		switch {
		case len(events) > 0:
			return true
		case done && readErr != nil:
			s.log.WarnContext(r.Context(), "kern: reading a finished run's events failed", append(logAttrs(r), "error", readErr)...)
			writeProblem(w, http.StatusServiceUnavailable, problemUnavailable, "Unavailable", "the run's events could not be read; try again")
			return false
		case done:
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
			return false
		}
		select {
		case <-r.Context().Done():
			return false
		case <-changed:
		}
	}
}

// resumeAfter is the seq a stream starts after: Last-Event-ID (what a
// reconnecting EventSource sends, with the URL it first used) over ?after.
func resumeAfter(r *http.Request) (int64, error) {
	text, field := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if text == "" {
		text, field = r.URL.Query().Get("after"), "after"
	}
	if text == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("kern: %w: %s %q is not an event seq (a whole number from 0)", run.ErrInvalidArgument, field, text)
	}
	return n, nil
}

// writeEvent writes one event in the text/event-stream format; data is the
// event's JSON on one line.
func writeEvent(buf *bytes.Buffer, ev run.Event) {
	data := ev.Data
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage("{}")
	} else if bytes.ContainsAny(data, "\r\n") {
		var compact bytes.Buffer
		if json.Compact(&compact, data) == nil {
			data = compact.Bytes()
		}
	}
	fmt.Fprintf(buf, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, data)
}
