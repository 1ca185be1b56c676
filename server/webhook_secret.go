package server

import (
	"net/http"

	"github.com/kern-go/kern/db"
)

// webhookSecretJSON is what POST /v1/webhook-secret answers: the only time
// the secret is shown.
type webhookSecretJSON struct {
	TenantID string `json:"tenant_id"`
	Secret   string `json:"secret"`
}

// rotateWebhookSecret makes a new webhook signing secret for the key's
// tenant, replacing its previous one, and shows it this once: no route
// reads it back, so a leaked key can rotate it (breaking deliveries, which
// the tenant notices) but cannot learn the secret in use.
func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request, t *db.TenantDB) {
	secret, err := t.RotateWebhookSecret(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, webhookSecretJSON{TenantID: t.Tenant(), Secret: secret})
}
