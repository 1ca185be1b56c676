package server

import (
	"net/http"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// scheduleRequest is PUT /v1/schedules/{name}'s body.
type scheduleRequest struct {
	Agent     string         `json:"agent"`
	Prompt    string         `json:"prompt"`
	Cron      string         `json:"cron"`
	Timezone  string         `json:"timezone"`
	SessionID string         `json:"session_id"`
	Metadata  map[string]any `json:"metadata"`
	Paused    bool           `json:"paused"`
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	list, err := t.ListSchedules(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]ScheduleJSON, len(list))
	for i, sc := range list {
		out[i] = ScheduleBody(sc)
	}
	writeJSON(w, http.StatusOK, map[string]any{"schedules": out})
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	sc, err := t.GetSchedule(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ScheduleBody(sc))
}

func (s *Server) putSchedule(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	var q scheduleRequest
	if !s.decodeBody(w, r, &q, false) {
		return
	}
	sc, err := t.PutSchedule(r.Context(), run.Schedule{
		Name: r.PathValue("name"), AgentName: q.Agent, Prompt: q.Prompt, Cron: q.Cron, Timezone: q.Timezone,
		SessionID: q.SessionID, Metadata: numbersAsGiven(q.Metadata), Paused: q.Paused,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ScheduleBody(sc))
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	if err := t.DeleteSchedule(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
