package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/server"
)

func newServeCmd(flags *rootFlags) *cobra.Command {
	var (
		addr     string
		cfg      server.Config
		shutdown time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API until SIGINT/SIGTERM",
		Long: `Serves kern's HTTP API (package server): submit, follow over server-sent
events, cancel and answer runs from any language. Every /v1 route takes
"Authorization: Bearer <secret>", a key from "kern keys create"; a key sees
only its tenant's runs. The OpenAPI document is at /v1/openapi.json; the
dashboard at /ui/ (sign in with a key), River UI at /riverui/ for the
tenants given by --riverui-tenant. Behind a proxy that terminates TLS,
give --behind-tls (or KERN_BEHIND_TLS=true) so the sign-in cookie is
Secure.

The server runs no agents: start "kern worker" processes against the same
database for that. On SIGINT or SIGTERM it stops accepting connections and
lets requests finish for --shutdown-timeout; event streams are cut then
(clients resume with Last-Event-ID).`,
		Example: `  kern serve --addr 127.0.0.1:8080
  kern keys create --tenant acme --name ci
  curl -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
       -d '{"agent":"assistant","prompt":"Hello"}' http://127.0.0.1:8080/v1/runs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v := os.Getenv("KERN_BEHIND_TLS"); v != "" && !cmd.Flags().Changed("behind-tls") {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("KERN_BEHIND_TLS=%q is not true or false", v)
				}
				cfg.BehindTLS = b
			}
			ctx := cmd.Context()
			d, err := flags.open(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			cfg.Logger = newLogger()
			tel, stopTel, err := setupTelemetry(ctx, "kern-serve", cfg.Logger)
			if err != nil {
				return err
			}
			defer stopTel()
			cfg.Metrics = tel.Metrics // GET /metrics
			srv, err := server.New(d, cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			hs := srv.HTTPServer(addr)
			hs.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			cfg.Logger.Info("kern serve listening", slog.String("addr", "http://"+ln.Addr().String()))
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			cfg.Logger.Info("kern serve stopping", slog.Duration("grace", shutdown))
			stopCtx, cancel := context.WithTimeout(context.Background(), shutdown)
			defer cancel()
			if err := hs.Shutdown(stopCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("shutdown: %w", err)
			}
			_ = hs.Close() // event streams outlive Shutdown's grace
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on (host:port; :0 picks a free port, printed in the log)")
	cmd.Flags().BoolVar(&cfg.AllowPrivateWebhooks, "allow-private-webhooks", false, "let tenants name webhook URLs on loopback and private addresses (give kern worker the same flag: it checks each delivery's address too)")
	cmd.Flags().StringSliceVar(&cfg.RiverUITenants, "riverui-tenant", nil, "tenants whose keys may open River UI at /riverui/ (it shows every tenant's jobs); repeat or comma-separate")
	cmd.Flags().BoolVar(&cfg.BehindTLS, "behind-tls", false, "browsers reach the server over https through a TLS-terminating proxy: dashboard cookies are always Secure (default $KERN_BEHIND_TLS)")
	cmd.Flags().Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", server.DefaultMaxBodyBytes, "largest request body; larger is refused with 413")
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 10*time.Second, "grace period for requests in flight on SIGTERM")
	return cmd
}
