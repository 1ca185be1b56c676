package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"riverqueue.com/riverui"
)

// River UI (riverqueue.com/riverui) at /riverui/, behind the dashboard's
// sign-in. It shows River's jobs of every tenant — their args name runs
// and agents — so only the tenants in Config.RiverUITenants may open it;
// other signed-in tenants get 403.
//
// River UI's API takes its changes (cancel, retry, delete jobs, pause
// queues) as JSON requests authenticated by the session cookie alone, with
// no token of its own: besides the cookie's SameSite=Strict, every request
// but GET, HEAD and OPTIONS must come from a page of this server, by its
// Origin header or, without one, its Referer (a browser sends one of them
// on every such request); otherwise it is 403. Its host must be the
// request's Host, so a proxy in front must pass the browser's Host on.

// newRiverUI builds the handler over an insert-only River client on d's
// pool and starts its background services (River UI caches some counts),
// which Close stops.
func (s *Server) newRiverUI() error {
	client, err := river.NewClient(riverpgxv5.New(s.d.Pool()), &river.Config{Logger: s.log, Schema: s.d.Schema()})
	if err != nil {
		return fmt.Errorf("River client: %w", err)
	}
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints[pgx.Tx](client, nil),
		Logger:    s.log,
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("River UI: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := h.Start(ctx); err != nil {
		cancel()
		return fmt.Errorf("River UI: %w", err)
	}
	s.stopRiverUI = cancel
	s.mux.Handle("/riverui/", s.uiAuth(func(w http.ResponseWriter, r *http.Request, v *uiVisit) {
		if !v.riverUI {
			s.uiError(w, r, http.StatusForbidden, "River UI shows the jobs of every tenant; this key's tenant may not open it (Config.RiverUITenants).")
			return
		}
		if !s.sameOrigin(r) {
			s.log.WarnContext(r.Context(), "kern: River UI request from another site refused", logAttrs(r)...)
			writeProblem(w, http.StatusForbidden, problemForbidden, "Forbidden",
				"River UI takes changes only from its own pages: the request's Origin (or Referer) is missing or another site's")
			return
		}
		// River UI's pages load their own scripts and styles.
		w.Header().Del("Content-Security-Policy")
		h.ServeHTTP(w, r)
	}))
	return nil
}

// sameOrigin tells whether r may change something: a safe method, or an
// Origin (else a Referer) of this server's host. The scheme must be https
// when the server knows the request came over TLS (r.TLS or
// Config.BehindTLS); else http or https, as a TLS-terminating proxy that
// kern was not told about sends https origins over plain HTTP.
func (s *Server) sameOrigin(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if from == "" || from == "null" {
		return false
	}
	u, err := url.Parse(from)
	if err != nil || u.Host == "" || u.User != nil {
		return false
	}
	switch u.Scheme {
	case "https":
	case "http":
		if r.TLS != nil || s.cfg.BehindTLS {
			return false
		}
	default:
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// mayOpenRiverUI tells whether tenant is one of Config.RiverUITenants.
func (s *Server) mayOpenRiverUI(tenant string) bool {
	return slices.Contains(s.cfg.RiverUITenants, tenant)
}
