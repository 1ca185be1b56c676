package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kern-go/kern/internal/telemetry"
)

// newLogger is the commands' logger: text on stderr, with trace_id and
// span_id on records logged inside a span.
func newLogger() *slog.Logger {
	return slog.New(telemetry.LogHandler(slog.NewTextHandler(os.Stderr, nil)))
}

// setupTelemetry sets the process's OpenTelemetry providers up (see
// telemetry.Setup: Prometheus metrics; OTLP traces when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set).
// The returned func flushes and stops them.
func setupTelemetry(ctx context.Context, service string, log *slog.Logger) (*telemetry.Process, func(), error) {
	p, err := telemetry.Setup(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	if p.Tracing {
		log.Info("kern: exporting traces over OTLP")
	}
	return p, func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(stopCtx); err != nil {
			log.Warn("kern: flushing telemetry failed", slog.Any("error", err))
		}
	}, nil
}

// serveMetrics serves GET /metrics on addr until the returned func is called.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("kern: metrics server stopped", slog.Any("error", err))
		}
	}()
	log.Info("kern: serving metrics", slog.String("addr", "http://"+ln.Addr().String()+"/metrics"))
	return func() { _ = hs.Close() }, nil
}
