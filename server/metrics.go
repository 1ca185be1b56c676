package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/kern-go/kern/internal/telemetry"
)

// Metric names of the server (see "Telemetry" in the README), stable as
// the worker's are: dashboards and alerts are built on them. In the
// Prometheus text of GET /metrics they are kern_http_server_requests_total,
// kern_http_server_duration_seconds and kern_sse_streams.
const (
	MetricHTTPRequests = "kern.http.server.requests" // counter {request}: by http.route, http.request.method, http.response.status_code
	MetricHTTPDuration = "kern.http.server.duration" // histogram s: request to the handler's return, by http.route, http.request.method
	MetricSSEStreams   = "kern.sse.streams"          // up-down counter {stream}: event streams open
)

// serverTelemetry is the server's instruments. An instrument that cannot
// be made is a no-op one: telemetry never stops the server.
type serverTelemetry struct {
	requests metric.Int64Counter
	duration metric.Float64Histogram
	streams  metric.Int64UpDownCounter
}

// secondsBuckets are the request histogram's bounds, in seconds: from a
// cached read (1 ms) to a long wait or event stream (10 min).
var secondsBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600}

func newServerTelemetry(mp metric.MeterProvider) *serverTelemetry {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(telemetry.ScopeName)
	t := &serverTelemetry{}
	t.requests, _ = m.Int64Counter(MetricHTTPRequests, metric.WithUnit("{request}"),
		metric.WithDescription("HTTP requests answered, by route, method and status code."))
	t.duration, _ = m.Float64Histogram(MetricHTTPDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from a request to its handler's return (an event stream: its whole life)."),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	t.streams, _ = m.Int64UpDownCounter(MetricSSEStreams, metric.WithUnit("{stream}"),
		metric.WithDescription("Event streams open."))
	return t
}

// observe serves r with h and counts it under route, the mux pattern that
// matched without its method ("" for none: "unmatched", so that unknown
// paths do not make a label each).
func (t *serverTelemetry) observe(w http.ResponseWriter, r *http.Request, route string, h http.Handler) {
	if _, path, ok := strings.Cut(route, " "); ok {
		route = path
	}
	if route == "" {
		route = "unmatched"
	}
	sw := &statusWriter{ResponseWriter: w}
	start := time.Now()
	defer func() {
		status := sw.status
		if status == 0 {
			status = http.StatusOK // nothing written; net/http answers 200
		}
		// The request's context may be done (a client gone); the counts are not.
		ctx := context.WithoutCancel(r.Context())
		attrs := metric.WithAttributes(attribute.String("http.route", route), attribute.String("http.request.method", r.Method))
		t.requests.Add(ctx, 1, attrs, metric.WithAttributes(attribute.String("http.response.status_code", strconv.Itoa(status))))
		t.duration.Record(ctx, time.Since(start).Seconds(), attrs)
	}()
	h.ServeHTTP(sw, r)
}

// statusWriter notes the status a handler answers. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush is for handlers that flush through http.Flusher (River UI's).
func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metrics serves GET /metrics, public: Config.Metrics, or, without one,
// the default Prometheus registry (Go runtime and process metrics).
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ServeHTTP(w, r)
		return
	}
	defaultMetrics.ServeHTTP(w, r)
}

var defaultMetrics = promhttp.Handler()
