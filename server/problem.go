package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/kern-go/kern/run"
)

// problem is an RFC 9457 problem detail.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// Problem types, one per kind of refusal.
const (
	problemInvalid      = "urn:kern:problem:invalid-argument"
	problemUnauthorized = "urn:kern:problem:unauthorized"
	problemForbidden    = "urn:kern:problem:forbidden"
	problemNotFound     = "urn:kern:problem:not-found"
	problemConflict     = "urn:kern:problem:conflict"
	problemNotWaiting   = "urn:kern:problem:not-waiting"
	problemTooLarge     = "urn:kern:problem:body-too-large"
	problemMediaType    = "urn:kern:problem:unsupported-media-type"
	problemMethod       = "urn:kern:problem:method-not-allowed"
	problemUnavailable  = "urn:kern:problem:unavailable"
	problemInternal     = "urn:kern:problem:internal"
)

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Type: typ, Title: title, Status: status, Detail: detail})
}

// writeError answers err as a problem. kern's sentinel errors say what the
// caller did wrong, in text meant for people (no SQL: db's errors wrap
// Postgres's only for failures, which land in the default case). Anything
// else is logged with the request and answered as a bare 500.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, run.ErrInvalidArgument):
		writeProblem(w, http.StatusBadRequest, problemInvalid, "Invalid argument", err.Error())
	case errors.Is(err, run.ErrNotFound):
		writeProblem(w, http.StatusNotFound, problemNotFound, "Not found", err.Error())
	case errors.Is(err, run.ErrAlreadyExists):
		writeProblem(w, http.StatusConflict, problemConflict, "Already exists", err.Error())
	case errors.Is(err, run.ErrNotWaiting):
		writeProblem(w, http.StatusConflict, problemNotWaiting, "Not waiting on that call", err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads an answer.
	default:
		s.log.ErrorContext(r.Context(), "kern: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeProblem(w, http.StatusInternalServerError, problemInternal, "Internal error",
			"the server could not answer; see its log")
	}
}

// logAttrs is what a log line says of a request: never its headers, which
// carry the key.
func logAttrs(r *http.Request) []any {
	return []any{slog.String("method", r.Method), slog.String("path", r.URL.Path)}
}
