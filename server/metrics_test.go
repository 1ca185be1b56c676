package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/kern-go/kern/server"
)

// scrape reads GET /metrics and parses the Prometheus text.
func scrape(t *testing.T, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	r := e.do(t, "", "GET", "/metrics", nil).expect(t, http.StatusOK)
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(r.body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample is the value of the sample of family f whose labels include
// want; ok is false when there is none.
func sample(f *dto.MetricFamily, want map[string]string) (v float64, ok bool) {
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The server's own metrics, scraped from its /metrics: requests by route,
// method and status, their durations, and the event streams open.
func TestServerMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e := newEnv(t, server.Config{MeterProvider: mp, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})})

	id := e.submit(t, e.acme, approvalPrompt)
	e.wait(t, e.acme, id) // waiting: its stream stays open
	e.do(t, e.acme, "GET", "/nope", nil).expect(t, http.StatusNotFound)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	streamCtx, closeStream := context.WithCancel(ctx)
	res, _ := e.stream(t, streamCtx, e.acme, id, "", "")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", res.StatusCode)
	}
	fams := scrape(t, e)
	if n, ok := sample(fams["kern_sse_streams"], nil); !ok || n != 1 {
		t.Errorf("kern_sse_streams with a stream open: %v (found %v), want 1", n, ok)
	}
	closeStream()
	res.Body.Close()
	// The stream's handler notices the client gone a moment later, and its
	// request is counted after the handler returns, a moment after the
	// stream gauge went down: poll for both.
	streamCounted := map[string]string{"http_route": "/v1/runs/{run_id}/events", "http_request_method": "GET", "http_response_status_code": "200"}
	for {
		fams = scrape(t, e)
		n, ok := sample(fams["kern_sse_streams"], nil)
		// The series can show before its first count (at 0): wait for the count.
		if c, counted := sample(fams["kern_http_server_requests_total"], streamCounted); ok && n == 0 && counted && c >= 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kern_sse_streams never came back to 0, or the stream's request was never counted: %v", fams["kern_sse_streams"])
		}
	}
	requests := fams["kern_http_server_requests_total"]
	for _, c := range []struct {
		route, method, status string
		min                   float64
	}{
		{"/v1/runs", "POST", "202", 1},
		{"/v1/runs/{run_id}/wait", "GET", "200", 1},
		{"/v1/runs/{run_id}/events", "GET", "200", 1},
		{"unmatched", "GET", "404", 1},
		{"/metrics", "GET", "200", 1},
	} {
		n, ok := sample(requests, map[string]string{"http_route": c.route, "http_request_method": c.method, "http_response_status_code": c.status})
		if !ok || n < c.min {
			t.Errorf("kern_http_server_requests_total{%s %s %s} = %v (found %v), want at least %v; family: %v", c.method, c.route, c.status, n, ok, c.min, requests)
		}
	}
	if n, ok := sample(fams["kern_http_server_duration_seconds"], map[string]string{"http_route": "/v1/runs", "http_request_method": "POST"}); !ok || n != 1 {
		t.Errorf("kern_http_server_duration_seconds of POST /v1/runs: %v observations (found %v), want 1", n, ok)
	}
}
