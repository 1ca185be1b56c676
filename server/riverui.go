package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"riverqueue.com/riverui"
)

// River UI (riverqueue.com/riverui) at /riverui/, behind the dashboard's
// sign-in. It shows River's jobs of every tenant — their args name runs
// and agents — so only the tenants in Config.RiverUITenants may open it;
// other signed-in tenants get 403.

// newRiverUI builds the handler over an insert-only River client on d's
// pool and starts its background services (River UI caches some counts),
// which Close stops.
func (s *Server) newRiverUI() error {
	client, err := river.NewClient(riverpgxv5.New(s.d.Pool()), &river.Config{Logger: s.log})
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
		// River UI's pages load their own scripts and styles.
		w.Header().Del("Content-Security-Policy")
		h.ServeHTTP(w, r)
	}))
	return nil
}

// mayOpenRiverUI tells whether tenant is one of Config.RiverUITenants.
func (s *Server) mayOpenRiverUI(tenant string) bool {
	return slices.Contains(s.cfg.RiverUITenants, tenant)
}
