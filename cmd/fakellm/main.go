// Command fakellm serves kern's fake OpenAI-compatible model server
// (internal/fakellm) on a TCP address, for the offline demo and for
// benchmarks that want the model in a separate process. Responses follow
// fakellm.DefaultReply and can be steered with "[fake:...]" directives in the
// prompt.
//
//	go run ./cmd/fakellm -addr 127.0.0.1:8089
//	# then point an OpenAI client at http://127.0.0.1:8089/v1 (any API key, or none)
//
// At exit it logs how many requests and TCP connections it served: many
// more connections than concurrent clients means a client is not reusing
// its connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kern-go/kern/internal/fakellm"
)

// shutdownGrace is how long in-flight streams may finish after a signal
// before their connections are closed (hanging ones never would).
const shutdownGrace = 5 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "address to listen on")
	verbose := flag.Bool("v", false, "log every request (debug level)")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, logger); err != nil {
		logger.Error("fakellm failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	fake := fakellm.New()
	srv := &http.Server{
		Handler:           logRequests(fake, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         fake.ConnState, // for the connection count logged at exit
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("fakellm listening", "addr", ln.Addr().String(), "base_url", "http://"+ln.Addr().String()+"/v1")

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "requests", fake.Count(), "connections", fake.Connections())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("graceful shutdown incomplete, closing connections", "err", err)
		if err := srv.Close(); err != nil {
			return fmt.Errorf("closing server: %w", err)
		}
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

func logRequests(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() {
			logger.Debug("request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start))
		}()
		next.ServeHTTP(w, r)
	})
}
