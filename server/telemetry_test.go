package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
	"github.com/kern-go/kern/server"
)

// TestTelemetryMetricsEndpoint scrapes GET /metrics (public) after a run
// of a worker whose MeterProvider the server's Config.Metrics exposes, and
// parses the Prometheus text: kern's metric names are there.
func TestTelemetryMetricsEndpoint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "metered", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{MeterProvider: mp}, a)
	api, err := server.New(d, server.Config{Logger: quietLogger, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)

	ctx := kerntest.Context(t, 30*time.Second)
	out, err := a.Run(ctx, "hello", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if out, err = a.WaitRun(ctx, out.RunID); err != nil || out.Status != run.StatusCompleted {
		t.Fatalf("run: %+v, %v", out, err)
	}
	// The run's counters are recorded before its job ends; its in-flight
	// gauge comes down after WaitRun may have returned, so scrape until it
	// has (each scrape is a fresh read, not a sleep).
	var families map[string]*dto.MetricFamily
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		parser := expfmt.NewTextParser(pmodel.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		families = fams
		if f := fams["kern_runs_in_flight"]; f != nil && len(f.Metric) == 1 && f.Metric[0].GetGauge().GetValue() == 0 {
			break
		}
	}
	runs := families["kern_runs_total"]
	if runs == nil || len(runs.Metric) != 1 || runs.Metric[0].GetCounter().GetValue() != 1 {
		t.Fatalf("kern_runs_total: %v", runs)
	}
	labels := map[string]string{}
	for _, l := range runs.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["kern_agent"] != "metered" || labels["kern_run_status"] != "completed" {
		t.Errorf("kern_runs_total labels %v", labels)
	}
	for _, name := range []string{"kern_tokens_total", "kern_run_duration_seconds", "kern_run_queue_wait_seconds",
		"kern_run_time_to_first_token_seconds", "kern_runs_in_flight"} {
		if families[name] == nil {
			names := make([]string, 0, len(families))
			for n := range families {
				names = append(names, n)
			}
			t.Errorf("no %s in /metrics; have %v", name, names)
		}
	}
}
