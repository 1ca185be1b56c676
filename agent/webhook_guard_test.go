package agent_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/netguard"
)

// submitTenantWebhook submits a background run of tenant "acme" that posts
// to url, then starts a worker with cfg.
func submitTenantWebhook(t *testing.T, cfg agent.WorkerConfig, url string) (*agent.Agent, string) {
	t.Helper()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "hooked", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := a.Run(ctx, "hello", agent.Background(true), agent.WithTenant("acme"), agent.WithWebhook(url))
	if err != nil {
		t.Fatal(err)
	}
	kerntest.Worker(t, d, cfg, a)
	return a, out.RunID
}

// TestWebhookDNSRebindingRefused: a name that resolves to a public address
// when the URL is checked at submit and to 127.0.0.1 when the worker
// delivers is not delivered: the delivery fails at once, saying why. The
// same worker with AllowPrivateWebhooks delivers it (so the refusal is the
// guard's), and so does a worker for the operator's own runs.
func TestWebhookDNSRebindingRefused(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	_, port, _ := net.SplitHostPort(recv.Listener.Addr().String())
	url := "http://rebound.example:" + port + "/hook"
	atSubmit := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
	}
	atDelivery := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	if err := netguard.CheckURL(t.Context(), atSubmit, url); err != nil {
		t.Fatalf("the submit check refused the name while it was public: %v", err)
	}

	cfg := fastWebhooks(5)
	agent.SetWebhookLookup(&cfg, atDelivery)
	a, id := submitTenantWebhook(t, cfg, url)
	out := waitWebhook(t, a, id)
	if w := out.Webhook; w.Status != "failed" || w.Attempts != 1 || !strings.Contains(w.LastError, "127.0.0.1 is a loopback address") ||
		!strings.Contains(w.LastError, "only public addresses") {
		t.Fatalf("webhook %+v, want failed after one attempt, saying why", *w)
	}
	if n := len(recv.deliveries()); n != 0 {
		t.Fatalf("%d deliveries to the rebound address", n)
	}

	allowed := fastWebhooks(5)
	allowed.AllowPrivateWebhooks = true
	agent.SetWebhookLookup(&allowed, atDelivery)
	a, id = submitTenantWebhook(t, allowed, url)
	if w := waitWebhook(t, a, id).Webhook; w.Status != "delivered" {
		t.Fatalf("with AllowPrivateWebhooks: webhook %+v", *w)
	}
	if n := len(recv.deliveries()); n != 1 {
		t.Fatalf("%d deliveries with AllowPrivateWebhooks, want 1", n)
	}
}

// TestWebhookTenantPrivateAddressFails: a tenant's run whose webhook names
// a loopback address in a spelling the old submit check let through ends
// as a failed delivery with the reason, at once, not a hang or retries;
// the operator's run to the same receiver is delivered.
func TestWebhookTenantPrivateAddressFails(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	_, port, _ := net.SplitHostPort(recv.Listener.Addr().String())
	for _, host := range []string{"127.0.0.1", "[::ffff:127.0.0.1]", "localhost"} {
		a, id := submitTenantWebhook(t, fastWebhooks(5), "http://"+host+":"+port+"/hook")
		out := waitWebhook(t, a, id)
		if w := out.Webhook; w.Status != "failed" || w.Attempts != 1 || !strings.Contains(w.LastError, "loopback") {
			t.Fatalf("%s: webhook %+v, want failed after one attempt, saying loopback", host, *w)
		}
	}
	if n := len(recv.deliveries()); n != 0 {
		t.Fatalf("%d deliveries to loopback", n)
	}
	a, id := submitWithWebhook(t, fastWebhooks(5), "hello", recv.URL)
	if out := waitWebhook(t, a, id); out.Webhook.Status != "delivered" || out.TenantID != "" {
		t.Fatalf("the operator's run: webhook %+v", *out.Webhook)
	}
}
