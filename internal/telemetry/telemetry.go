// Package telemetry holds kern's OpenTelemetry plumbing shared by its
// packages and commands: the trace context a run's job carries from the
// submitter to the worker, the process setup of the CLI (a Prometheus
// exporter for /metrics, OTLP trace export when the standard
// OTEL_EXPORTER_OTLP_* variables ask for it), and a slog handler that adds
// the current trace and span ids to every record.
package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of kern's tracers and meters.
const ScopeName = "github.com/kern-go/kern"

// traceParentKey is where a job's metadata holds the submitter's span
// context: W3C Trace Context, the key otelriver reads too.
const traceParentKey = "traceparent"

// JobMetadata is the River job metadata that carries ctx's span context to
// the worker ({"traceparent":"00-…"}), nil when ctx has no valid span: the
// job then carries nothing, and costs nothing more.
func JobMetadata(ctx context.Context) []byte {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	if carrier[traceParentKey] == "" {
		return nil
	}
	b, err := json.Marshal(map[string]string(carrier))
	if err != nil {
		return nil
	}
	return b
}

// SpanContextFromJobMetadata is the submitter's span context JobMetadata
// stored in a job's metadata; invalid when there is none.
func SpanContextFromJobMetadata(metadata []byte) trace.SpanContext {
	if !bytes.Contains(metadata, []byte(traceParentKey)) {
		return trace.SpanContext{}
	}
	var m map[string]any
	if err := json.Unmarshal(metadata, &m); err != nil {
		return trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{}
	for _, k := range []string{traceParentKey, "tracestate"} {
		if v, ok := m[k].(string); ok {
			carrier[k] = v
		}
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
}

// Process is the telemetry of a kern command: set up by Setup, shut down
// when the command ends.
type Process struct {
	// Metrics serves the process's metrics in the Prometheus text format.
	Metrics http.Handler
	// Tracing tells whether spans are exported (OTLP).
	Tracing bool

	shutdown []func(context.Context) error
}

// Setup configures the process's global OpenTelemetry providers for the
// command service ("kern-worker", "kern-serve"): a MeterProvider read by a
// Prometheus exporter (served by Process.Metrics, with Go runtime and
// process metrics), and — when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set — a TracerProvider exporting
// spans over OTLP/HTTP (otlptracehttp reads the standard variables:
// endpoint, headers, timeout, …). Without them no TracerProvider is set and
// spans cost nothing. The W3C trace-context propagator is installed either
// way.
func Setup(ctx context.Context, service string) (*Process, error) {
	p := &Process{}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		res = resource.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	otel.SetMeterProvider(mp)
	p.shutdown = append(p.shutdown, mp.Shutdown)
	p.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		te, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, errors.Join(err, p.Shutdown(ctx))
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
		otel.SetTracerProvider(tp)
		p.shutdown = append(p.shutdown, tp.Shutdown)
		p.Tracing = true
	}
	return p, nil
}

// Shutdown flushes and stops what Setup started.
func (p *Process) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(p.shutdown) - 1; i >= 0; i-- {
		errs = append(errs, p.shutdown[i](ctx))
	}
	p.shutdown = nil
	return errors.Join(errs...)
}

// LogHandler wraps inner so that every record logged with a context that
// holds a valid span carries trace_id and span_id.
func LogHandler(inner slog.Handler) slog.Handler { return traceHandler{inner: inner} }

type traceHandler struct{ inner slog.Handler }

func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.inner.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{inner: h.inner.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{inner: h.inner.WithGroup(name)}
}
