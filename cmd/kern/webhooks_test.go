package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/kerntest"
)

// webhooks secret rotate prints a new secret once (stdout; the note on
// stderr), a different one each time; --json names the tenant; an empty
// or missing tenant is refused.
func TestWebhooksSecretRotate(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)

	r := kernExec(t, ctx, url, "", "webhooks", "secret", "rotate", "--tenant", "acme")
	if r.code != 0 {
		t.Fatalf("rotate: exit %d, stderr %q", r.code, r.stderr)
	}
	first := strings.TrimSuffix(r.stdout, "\n")
	if !strings.HasPrefix(first, "whsec_") || strings.Contains(first, "\n") {
		t.Fatalf("rotate printed %q; want the secret on one line", r.stdout)
	}
	if !strings.Contains(r.stderr, "only once") || strings.Contains(r.stderr, first) {
		t.Fatalf("rotate stderr %q", r.stderr)
	}
	var second map[string]any
	if err := json.Unmarshal([]byte(kern(t, ctx, url, "webhooks", "secret", "rotate", "--tenant", "acme", "--json")), &second); err != nil {
		t.Fatal(err)
	}
	if len(second) != 2 || second["tenant"] != "acme" || second["secret"] == first || !strings.HasPrefix(second["secret"].(string), "whsec_") {
		t.Fatalf("rotate --json: %v", second)
	}
	// The stored secret is the last one printed.
	var stored string
	if err := d.Pool().QueryRow(ctx, `SELECT secret FROM kern_webhook_secret WHERE tenant_id = 'acme'`).Scan(&stored); err != nil || stored != second["secret"] {
		t.Fatalf("stored %q (%v), want the last printed", stored, err)
	}
	for _, args := range [][]string{
		{"webhooks", "secret", "rotate"},
		{"webhooks", "secret", "rotate", "--tenant", ""},
	} {
		if r := kernExec(t, ctx, url, "", args...); r.code != 1 || !strings.HasPrefix(r.stderr, "kern: ") || r.stdout != "" {
			t.Errorf("kern %v: %+v; want exit 1 and an error", args, r)
		}
	}
}
