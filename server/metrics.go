package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
