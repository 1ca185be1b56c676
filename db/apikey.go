package db

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/run"
)

// apiKeyPrefix starts every secret, so a leaked one is recognisable (and
// secret scanners can be taught it).
const apiKeyPrefix = "kern_"

// APIKey is an API key as stored: never its secret.
type APIKey struct {
	Name      string
	TenantID  string
	CreatedAt time.Time
	RevokedAt *time.Time // nil while the key is valid
}

// CreateAPIKey makes a key for tenant, named name (unique across tenants),
// and returns its secret: "kern_" and 43 characters of base64url, 256
// random bits. The secret is shown this once; only its SHA-256 is stored.
// An empty or over-long tenant or name is run.ErrInvalidArgument; a name
// in use (also by a revoked key) is run.ErrAlreadyExists.
func (d *DB) CreateAPIKey(ctx context.Context, tenant, name string) (secret string, err error) {
	for _, f := range []struct{ field, value string }{{"tenant", tenant}, {"key name", name}} {
		if strings.TrimSpace(f.value) == "" {
			return "", fmt.Errorf("kern: %w: %s is empty", run.ErrInvalidArgument, f.field)
		}
		if err := checkText(f.field, f.value, maxKeyBytes); err != nil {
			return "", err
		}
	}
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("kern: create API key: %w", err)
	}
	secret = apiKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(secret))
	if _, err := d.pool.Exec(ctx, sqlCreateAPIKey, name, tenant, sum[:]); err != nil {
		if isUniqueViolation(err) {
			return "", fmt.Errorf("kern: API key %q: %w", name, run.ErrAlreadyExists)
		}
		return "", fmt.Errorf("kern: create API key %q: %w", name, err)
	}
	return secret, nil
}

// RevokeAPIKey revokes the key name at once: the next request with it is
// refused. Revoking a revoked key changes nothing; an unknown name is
// run.ErrNotFound.
func (d *DB) RevokeAPIKey(ctx context.Context, name string) error {
	tag, err := d.pool.Exec(ctx, sqlRevokeAPIKey, name)
	if err != nil {
		return fmt.Errorf("kern: revoke API key %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("kern: API key %q: %w", name, run.ErrNotFound)
	}
	return nil
}

// ListAPIKeys lists every key, revoked ones too, by name.
func (d *DB) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := d.pool.Query(ctx, sqlListAPIKeys)
	if err != nil {
		return nil, fmt.Errorf("kern: list API keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[APIKey])
	if err != nil {
		return nil, fmt.Errorf("kern: list API keys: %w", err)
	}
	return keys, nil
}

// AuthenticateAPIKey returns the tenant of a valid (not revoked) key's
// secret, and ok false for anything else. It looks the key up by the
// secret's SHA-256, and compares the hash it read in constant time.
func (d *DB) AuthenticateAPIKey(ctx context.Context, secret string) (tenant string, ok bool, err error) {
	if !strings.HasPrefix(secret, apiKeyPrefix) || len(secret) > 256 {
		return "", false, nil
	}
	sum := sha256.Sum256([]byte(secret))
	var stored []byte
	err = d.pool.QueryRow(ctx, sqlAuthenticateAPIKey, sum[:]).Scan(&tenant, &stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("kern: authenticate API key: %w", err)
	}
	if subtle.ConstantTimeCompare(stored, sum[:]) != 1 {
		return "", false, nil
	}
	return tenant, true, nil
}
