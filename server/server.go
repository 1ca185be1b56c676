package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/netguard"
)

// Config tunes a Server. The zero Config is ready to use.
type Config struct {
	// Logger receives the server's log; nil means slog.Default().
	Logger *slog.Logger
	// AllowPrivateWebhooks lets tenants name webhook URLs on addresses that
	// are not public (loopback, private, link-local, CGNAT, …; see
	// internal/netguard) and "localhost". Without it such a submit is
	// refused (400), so that a tenant cannot make the workers post to the
	// operator's internal network. The workers check again, at each
	// delivery, the address they connect to: set
	// agent.WorkerConfig.AllowPrivateWebhooks on them too (kern worker
	// --allow-private-webhooks), or they fail those deliveries.
	AllowPrivateWebhooks bool
	// MaxBodyBytes bounds a request body; a larger one is refused with 413.
	// 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxWait bounds the timeout of GET /v1/runs/{id}/wait; 0 means
	// DefaultMaxWait.
	MaxWait time.Duration
	// HeartbeatInterval is how often an idle event stream sends a comment
	// line, so proxies keep it open; 0 means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// RiverUITenants are the tenants whose keys may open River UI at
	// /riverui/ (after signing in to the dashboard). River UI shows every
	// tenant's jobs, so keep it to the operator's own tenant; empty: nobody.
	RiverUITenants []string
	// BehindTLS says that browsers reach the server over https through a
	// TLS-terminating proxy, though requests arrive as plain HTTP: the
	// dashboard's cookies are then Secure on every request (without it,
	// only on requests that came over TLS), and River UI refuses changes
	// whose Origin is http.
	BehindTLS bool
	// MeterProvider makes the server's instruments (MetricHTTPRequests,
	// MetricHTTPDuration, MetricSSEStreams); nil means OpenTelemetry's
	// global provider, which kern serve sets to the one Metrics reads.
	MeterProvider metric.MeterProvider
	// Metrics serves GET /metrics (public, no key), in the Prometheus text
	// format: typically an OpenTelemetry Prometheus exporter's registry
	// (kern serve's is). nil serves the default Prometheus registry.
	Metrics http.Handler

	// lookup resolves webhook hosts at submit; nil: the system's resolver
	// (tests set their own, export_test.go).
	lookup netguard.Lookup
}

// Defaults of Config.
const (
	// DefaultMaxBodyBytes leaves room for a prompt of run.MaxInputBytes
	// and metadata of 1 MiB with their JSON around them, so that the
	// prompt's own limit, not the body's, is what a caller meets.
	DefaultMaxBodyBytes      = 3 << 20
	DefaultMaxWait           = 5 * time.Minute
	DefaultHeartbeatInterval = 15 * time.Second
	defaultWait              = 30 * time.Second
)

// Server is kern's HTTP API, an http.Handler (see the package doc).
type Server struct {
	d     *db.DB
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	hubs  *hubs
	tel   *serverTelemetry
	pages map[string]*template.Template // the dashboard's, by file name

	stopRiverUI context.CancelFunc
	closeOnce   sync.Once
}

// New returns the API over d. It starts nothing: the handler serves
// requests as they come, and an event stream's reader lives as long as the
// stream.
func New(d *db.DB, cfg Config) (*Server, error) {
	switch {
	case d == nil:
		return nil, errors.New("kern: server.New: nil *db.DB")
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("kern: server.New: MaxBodyBytes %d is negative", cfg.MaxBodyBytes)
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("kern: server.New: MaxWait %v is negative", cfg.MaxWait)
	case cfg.HeartbeatInterval < 0:
		return nil, fmt.Errorf("kern: server.New: HeartbeatInterval %v is negative", cfg.HeartbeatInterval)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	s := &Server{d: d, cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), hubs: newHubs(d), tel: newServerTelemetry(cfg.MeterProvider)}
	if s.log == nil {
		s.log = slog.Default()
	}
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, fmt.Errorf("kern: server.New: dashboard templates: %w", err)
	}
	s.routes()
	s.uiRoutes()
	if err := s.newRiverUI(); err != nil {
		return nil, fmt.Errorf("kern: server.New: %w", err)
	}
	return s, nil
}

// Close stops the server's background work (River UI's caches). It does
// not close d, nor the streams in flight: shut the http.Server down for
// that. Idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.stopRiverUI != nil {
			s.stopRiverUI()
		}
	})
}

// route is one pattern of the API; public routes take no key.
type route struct {
	pattern string
	public  http.HandlerFunc
	handler tenantHandler
}

// routeTable is every route (openapi_test.go holds openapi.json to it).
func (s *Server) routeTable() []route {
	return []route{
		{pattern: "GET /healthz", public: s.health},
		{pattern: "GET /metrics", public: s.metrics},
		{pattern: "GET /v1/openapi.json", public: serveOpenAPI},

		{pattern: "POST /v1/runs", handler: s.submitRun},
		{pattern: "GET /v1/runs", handler: s.listRuns},
		{pattern: "GET /v1/runs/{run_id}", handler: s.getRun},
		{pattern: "GET /v1/runs/{run_id}/wait", handler: s.waitRun},
		{pattern: "POST /v1/runs/{run_id}/cancel", handler: s.cancelRun},
		{pattern: "GET /v1/runs/{run_id}/events", handler: s.streamEvents},
		{pattern: "GET /v1/runs/{run_id}/messages", handler: s.listMessages},
		{pattern: "POST /v1/runs/{run_id}/tool-calls/{call_id}/approve", handler: s.approveToolCall},
		{pattern: "POST /v1/runs/{run_id}/tool-calls/{call_id}/reject", handler: s.rejectToolCall},
		{pattern: "POST /v1/runs/{run_id}/tool-calls/{call_id}/result", handler: s.submitToolResult},

		{pattern: "GET /v1/schedules", handler: s.listSchedules},
		{pattern: "GET /v1/schedules/{name}", handler: s.getSchedule},
		{pattern: "PUT /v1/schedules/{name}", handler: s.putSchedule},
		{pattern: "DELETE /v1/schedules/{name}", handler: s.deleteSchedule},

		{pattern: "POST /v1/webhook-secret", handler: s.rotateWebhookSecret},
	}
}

func (s *Server) routes() {
	for _, r := range s.routeTable() {
		if r.public != nil {
			s.mux.HandleFunc(r.pattern, r.public)
		} else {
			s.mux.Handle(r.pattern, s.auth(r.handler))
		}
	}
}

// ServeHTTP implements http.Handler. Unknown routes and methods answer as
// problems too, not as the mux's plain text. Every request is counted
// (MetricHTTPRequests, MetricHTTPDuration) under its route's pattern.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := s.mux.Handler(r)
	s.tel.observe(w, r, pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.ErrorContext(r.Context(), "kern: handler panicked", append(logAttrs(r), "panic", fmt.Sprint(p))...)
				writeProblem(w, http.StatusInternalServerError, problemInternal, "Internal error", "the server could not answer; see its log")
			}
		}()
		if pattern == "" {
			if allow := s.allowed(r); allow != "" {
				w.Header().Set("Allow", allow)
				writeProblem(w, http.StatusMethodNotAllowed, problemMethod, "Method not allowed",
					r.Method+" is not a method of "+r.URL.Path+" (allowed: "+allow+")")
				return
			}
			writeProblem(w, http.StatusNotFound, problemNotFound, "Not found", "no route "+r.URL.Path)
			return
		}
		s.mux.ServeHTTP(w, r) // not the Handler found above: this sets r's path values
	}))
}

// allowed lists the methods the mux serves for r's path, "" for none.
func (s *Server) allowed(r *http.Request) string {
	var methods []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			methods = append(methods, m)
		}
	}
	return strings.Join(methods, ", ")
}

// HTTPServer returns an http.Server for the API on addr, with timeouts that
// keep slow or idle clients from holding connections: 10 s to send the
// headers, 1 min for a request's body, 2 min idle between requests. It sets
// no write timeout, which would cut event streams; each response instead
// bounds its own writes (see streamEvents).
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// health answers 200 when Postgres answers within 2 s, else 503.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.d.Pool().Ping(ctx); err != nil {
		s.log.WarnContext(r.Context(), "kern: health check: Postgres does not answer", "error", err)
		writeProblem(w, http.StatusServiceUnavailable, problemUnavailable, "Unavailable", "the database does not answer")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// tenantHandler is a /v1 handler, called with the key's tenant view.
type tenantHandler func(w http.ResponseWriter, r *http.Request, t *db.TenantDB)

// auth authenticates the bearer key and calls h with its tenant's view;
// no key or a bad one is 401.
func (s *Server) auth(h tenantHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kern"`)
			writeProblem(w, http.StatusUnauthorized, problemUnauthorized, "Unauthorized",
				"send an API key as Authorization: Bearer <secret> (kern keys create)")
			return
		}
		tenant, ok, err := s.d.AuthenticateAPIKey(r.Context(), secret)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kern", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, problemUnauthorized, "Unauthorized", "the API key is not valid (unknown or revoked)")
			return
		}
		t, err := s.d.ForTenant(tenant)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		h(w, r, t)
	})
}

// bearer reads the secret of "Authorization: Bearer <secret>".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}
