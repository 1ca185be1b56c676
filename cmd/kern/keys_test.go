package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/kerntest"
)

// keys create prints the secret once (stdout; the note on stderr), list
// shows the keys without it, revoke refuses the key from then on.
func TestKeysCreateListRevoke(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)

	// Plain: the secret alone on stdout, the note on stderr.
	r := kernExec(t, ctx, url, "", "keys", "create", "--tenant", "acme", "--name", "acme-ci")
	if r.code != 0 {
		t.Fatalf("keys create: exit %d, stderr %q", r.code, r.stderr)
	}
	secret := strings.TrimSuffix(r.stdout, "\n")
	if !strings.HasPrefix(secret, "kern_") || len(secret) != len("kern_")+43 || strings.Contains(secret, "\n") {
		t.Fatalf("keys create printed %q; want the secret on one line", r.stdout)
	}
	if !strings.Contains(r.stderr, "only once") || strings.Contains(r.stderr, secret) || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("keys create stderr %q; want a one-line note that it is shown only once", r.stderr)
	}
	if tenant, ok, err := d.AuthenticateAPIKey(ctx, secret); err != nil || !ok || tenant != "acme" {
		t.Fatalf("the printed secret authenticates as %q, %v, %v; want acme", tenant, ok, err)
	}

	// --json: name, tenant, secret.
	js := kern(t, ctx, url, "keys", "create", "--tenant", "globex", "--name", "globex-web", "--json")
	var created map[string]any
	if err := json.Unmarshal([]byte(js), &created); err != nil {
		t.Fatalf("keys create --json printed %q: %v", js, err)
	}
	secret2, _ := created["secret"].(string)
	if len(created) != 3 || created["name"] != "globex-web" || created["tenant"] != "globex" || !strings.HasPrefix(secret2, "kern_") {
		t.Fatalf("keys create --json: %v; want name, tenant and secret", created)
	}
	if tenant, ok, err := d.AuthenticateAPIKey(ctx, secret2); err != nil || !ok || tenant != "globex" {
		t.Fatalf("the --json secret authenticates as %q, %v, %v; want globex", tenant, ok, err)
	}

	// Refusals: a taken name, a missing flag.
	for _, args := range [][]string{
		{"keys", "create", "--tenant", "other", "--name", "acme-ci"},
		{"keys", "create", "--name", "x"},
		{"keys", "create", "--tenant", "acme"},
		{"keys", "create", "--tenant", " ", "--name", "x"},
		{"keys", "revoke", "nope"},
		{"keys", "revoke"},
	} {
		if r := kernExec(t, ctx, url, "", args...); r.code != 1 || !strings.HasPrefix(r.stderr, "kern: ") || r.stdout != "" {
			t.Errorf("kern %v: %+v; want exit 1 and an error", args, r)
		}
	}
	if r := kernExec(t, ctx, url, "", "keys", "revoke", "nope"); !strings.Contains(r.stderr, "API key nope: not found") {
		t.Errorf("revoke unknown: stderr %q", r.stderr)
	}
	if r := kernExec(t, ctx, url, "", "keys", "create", "--tenant", "other", "--name", "acme-ci"); !strings.Contains(r.stderr, "already exists") {
		t.Errorf("create a taken name: stderr %q", r.stderr)
	}

	noSecrets := func(what, out string) {
		t.Helper()
		for _, s := range []string{secret, secret2} {
			if strings.Contains(out, s) || strings.Contains(out, s[len("kern_"):]) {
				t.Fatalf("%s shows a secret:\n%s", what, out)
			}
		}
	}
	table := kern(t, ctx, url, "keys", "list")
	noSecrets("keys list", table)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME TENANT CREATED REVOKED" {
		t.Fatalf("keys list printed\n%s", table)
	}
	for i, want := range []string{"acme-ci acme", "globex-web globex"} {
		f := strings.Fields(lines[i+1])
		if len(f) != 4 || strings.Join(f[:2], " ") != want || f[3] != "-" {
			t.Fatalf("keys list line %d: %q; want %s, not revoked", i+1, lines[i+1], want)
		}
		if at, err := time.Parse(time.RFC3339, f[2]); err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
			t.Fatalf("keys list line %d: CREATED %q (%v)", i+1, f[2], err)
		}
	}
	listJS := kern(t, ctx, url, "keys", "list", "--json")
	noSecrets("keys list --json", listJS)
	var listed []map[string]any
	if err := json.Unmarshal([]byte(listJS), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("keys list --json: %v, %v\n%s", listed, err, listJS)
	}
	for _, k := range listed {
		if _, has := k["secret"]; has || k["revoked_at"] != nil || k["created_at"] == nil || k["tenant"] == nil {
			t.Fatalf("keys list --json entry %v", k)
		}
	}

	// Revoke: refused from then on, and listed as revoked.
	if out := kern(t, ctx, url, "keys", "revoke", "acme-ci"); out != "revoked\n" {
		t.Fatalf("keys revoke printed %q", out)
	}
	if _, ok, err := d.AuthenticateAPIKey(ctx, secret); err != nil || ok {
		t.Fatalf("a revoked key authenticates: %v, %v", ok, err)
	}
	if _, ok, _ := d.AuthenticateAPIKey(ctx, secret2); !ok {
		t.Fatal("revoking acme-ci revoked globex-web too")
	}
	if out := kern(t, ctx, url, "keys", "revoke", "acme-ci"); out != "revoked\n" {
		t.Fatalf("keys revoke again printed %q", out)
	}
	table = kern(t, ctx, url, "keys", "list")
	noSecrets("keys list after revoke", table)
	lines = strings.Split(strings.TrimSpace(table), "\n")
	if f := strings.Fields(lines[1]); len(lines) != 3 || len(f) != 4 || f[0] != "acme-ci" || f[3] == "-" {
		t.Fatalf("keys list after revoke:\n%s", table)
	} else if _, err := time.Parse(time.RFC3339, f[3]); err != nil {
		t.Fatalf("REVOKED %q: %v", f[3], err)
	}
	if f := strings.Fields(lines[2]); f[3] != "-" {
		t.Fatalf("globex-web listed revoked:\n%s", table)
	}
	listJS = kern(t, ctx, url, "keys", "list", "--json")
	listed = nil
	if err := json.Unmarshal([]byte(listJS), &listed); err != nil || len(listed) != 2 || listed[0]["revoked_at"] == nil || listed[1]["revoked_at"] != nil {
		t.Fatalf("keys list --json after revoke: %v, %v", listed, err)
	}
}
