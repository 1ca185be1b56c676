package db

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// webhookSecretPrefix is Standard Webhooks' prefix of a secret: the rest
// is the base64 of the key, as the spec's libraries take it.
const webhookSecretPrefix = "whsec_"

// RotateWebhookSecret makes a new webhook signing secret for this tenant
// and returns it: "whsec_" and the base64 of 32 random bytes, the form
// Standard Webhooks' libraries verify with. It replaces the tenant's
// previous secret at once: every delivery signed from then on, retries of
// earlier runs too, is signed with the new one. The secret is shown this
// once; no API reads it back (the worker reads it to sign).
//
// A tenant without a secret of its own has its deliveries signed with the
// workers' WorkerConfig.WebhookSecret, the operator's; the body's
// tenant_id names the tenant either way.
func (t *TenantDB) RotateWebhookSecret(ctx context.Context) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("kern: rotate webhook secret: %w", err)
	}
	secret := webhookSecretPrefix + base64.StdEncoding.EncodeToString(raw[:])
	if _, err := t.d.pool.Exec(ctx, sqlRotateWebhookSecret, t.tenant, secret); err != nil {
		return "", fmt.Errorf("kern: rotate webhook secret of tenant %q: %w", t.tenant, err)
	}
	return secret, nil
}

// WebhookSecret implements engine.Store: the tenant's own webhook secret,
// "" when it has none (or tenant is "", the operator).
func (d engineDB) WebhookSecret(ctx context.Context, tenant string) (string, error) {
	if tenant == "" {
		return "", nil
	}
	var secret string
	err := d.pool.QueryRow(ctx, sqlWebhookSecret, tenant).Scan(&secret)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("kern: webhook secret of tenant %q: %w", tenant, err)
	}
	return secret, nil
}

// The statements of webhook secrets; the table is in
// ../migrations/017_webhook_secrets.sql.
const (
	sqlRotateWebhookSecret = `
INSERT INTO kern_webhook_secret (tenant_id, secret) VALUES ($1, $2)
ON CONFLICT (tenant_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = now()`
	sqlWebhookSecret = `SELECT secret FROM kern_webhook_secret WHERE tenant_id = $1`
)
