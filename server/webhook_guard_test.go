package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/kern-go/kern/server"
)

// TestSubmitRefusesEverySpellingOfAPrivateWebhook: the spellings of
// reserved addresses that once passed the submit check are refused (400,
// nothing stored), and so is a name that resolves to one; public
// addresses and names are accepted.
func TestSubmitRefusesEverySpellingOfAPrivateWebhook(t *testing.T) {
	t.Parallel()
	cfg := server.Config{}
	server.SetLookup(&cfg, func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "public.example":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		case "nat64.example":
			return []netip.Addr{netip.MustParseAddr("64:ff9b::a9fe:a9fe")}, nil
		}
		return nil, errors.New("no such host")
	})
	e := newEnv(t, cfg)
	for _, u := range []string{
		"http://[64:ff9b::a9fe:a9fe]/h", // NAT64 of 169.254.169.254
		"http://[::a9fe:a9fe]/h",        // IPv4-compatible
		"http://[2002:a9fe:a9fe::]/h",   // 6to4
		"http://[::ffff:0:7f00:1]/h",    // SIIT of 127.0.0.1
		"http://0.0.0.1/h",
		"http://[fec0::1]/h",
		"http://198.18.0.1/h",
		"http://100.64.0.1/h",
		"http://[fd00::1]/h",
		"http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h", // Teredo of 127.0.0.1
		"http://nat64.example/h",
		"http://nowhere.example/h",
	} {
		e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "hook", "webhook": u, "delay": "1h"}).
			expectDetail(t, http.StatusBadRequest, "webhook", "public")
	}
	if n := e.countRuns(t); n != 0 {
		t.Fatalf("refused submits wrote %d runs", n)
	}
	for _, u := range []string{"https://public.example/h", "http://8.8.8.8/h", "http://[2606:4700:4700::1111]/h"} {
		e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "hook", "webhook": u, "delay": "1h"}).
			expect(t, http.StatusAccepted)
	}
}

// TestRotateWebhookSecret: POST /v1/webhook-secret answers a new secret
// for the key's tenant each time, shown once: no route reads it back.
func TestRotateWebhookSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	var first, second, globex struct {
		TenantID string `json:"tenant_id"`
		Secret   string `json:"secret"`
	}
	res := e.do(t, e.acme, "POST", "/v1/webhook-secret", nil).expect(t, http.StatusOK)
	res.json(t, &first)
	if cc := res.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	e.do(t, e.acme, "POST", "/v1/webhook-secret", nil).expect(t, http.StatusOK).json(t, &second)
	e.do(t, e.globex, "POST", "/v1/webhook-secret", nil).expect(t, http.StatusOK).json(t, &globex)
	if first.TenantID != "acme" || globex.TenantID != "globex" || !strings.HasPrefix(first.Secret, "whsec_") ||
		first.Secret == second.Secret || second.Secret == globex.Secret {
		t.Fatalf("secrets %+v, %+v, %+v", first, second, globex)
	}
	// Not readable back: no GET, and no other answer carries it.
	e.do(t, e.acme, "GET", "/v1/webhook-secret", nil).expectProblem(t, http.StatusMethodNotAllowed)
	id := e.submit(t, e.acme, "hello")
	for _, r := range []response{
		e.do(t, e.acme, "GET", "/v1/runs/"+id, nil),
		e.do(t, e.acme, "GET", "/v1/runs", nil),
		e.do(t, "", "GET", "/v1/openapi.json", nil),
	} {
		if strings.Contains(string(r.body), second.Secret) {
			t.Fatalf("an answer carries the secret: %s", r.body)
		}
	}
}
