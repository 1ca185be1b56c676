package agent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
)

// TestWebhookSignedWithTheTenantsSecret: each tenant's deliveries are
// signed with its own secret and name it in the body (tenant_id): acme's
// delivery does not verify with globex's secret nor the operator's; a
// tenant with no secret of its own falls back to the operator's, its body
// naming it; rotating a secret signs the next deliveries with the new one
// only.
func TestWebhookSignedWithTheTenantsSecret(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "hooked", Model: model, DB: d}
	ctx := kerntest.Context(t, 60*time.Second)
	secrets := map[string]string{}
	for _, tenant := range []string{"acme", "globex"} {
		td, err := d.ForTenant(tenant)
		if err != nil {
			t.Fatal(err)
		}
		if secrets[tenant], err = td.RotateWebhookSecret(ctx); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secrets[tenant], "whsec_") || len(secrets[tenant]) < 40 {
			t.Fatalf("secret %q", secrets[tenant])
		}
	}
	if secrets["acme"] == secrets["globex"] {
		t.Fatal("two tenants got the same secret")
	}
	cfg := fastWebhooks(3)
	cfg.AllowPrivateWebhooks = true // the receiver is on loopback
	kerntest.Worker(t, d, cfg, a)

	// deliver submits a run of tenant (none: "") and returns its delivery.
	deliver := func(tenant string) delivery {
		t.Helper()
		opts := []agent.RunOption{agent.Background(true), agent.WithWebhook(recv.URL)}
		if tenant != "" {
			opts = append(opts, agent.WithTenant(tenant))
		}
		out, err := a.Run(ctx, "hello", opts...)
		if err != nil {
			t.Fatal(err)
		}
		if w := waitWebhook(t, a, out.RunID).Webhook; w.Status != "delivered" {
			t.Fatalf("tenant %q: webhook %+v", tenant, *w)
		}
		for _, g := range recv.deliveries() {
			if g.header.Get("webhook-id") == "msg_"+out.RunID {
				var body map[string]any
				if err := json.Unmarshal(g.body, &body); err != nil {
					t.Fatal(err)
				}
				if body["tenant_id"] != tenant || body["run_id"] != out.RunID {
					t.Fatalf("tenant %q: body names tenant %v, run %v", tenant, body["tenant_id"], body["run_id"])
				}
				return g
			}
		}
		t.Fatalf("no delivery of run %s", out.RunID)
		return delivery{}
	}
	verifies := func(g delivery, secret string) bool {
		return verifyStandardWebhook(secret, g.header, g.body) == nil
	}

	acme := deliver("acme")
	if !verifies(acme, secrets["acme"]) || verifies(acme, secrets["globex"]) || verifies(acme, testWebhookSecret) {
		t.Fatalf("acme's delivery: with acme's secret %v, globex's %v, the operator's %v",
			verifies(acme, secrets["acme"]), verifies(acme, secrets["globex"]), verifies(acme, testWebhookSecret))
	}
	globex := deliver("globex")
	if !verifies(globex, secrets["globex"]) || verifies(globex, secrets["acme"]) {
		t.Fatal("globex's delivery is not signed with globex's secret alone")
	}
	initech := deliver("initech") // no secret of its own
	if !verifies(initech, testWebhookSecret) || verifies(initech, secrets["acme"]) {
		t.Fatal("a tenant without a secret is not signed with the operator's")
	}
	operator := deliver("")
	if !verifies(operator, testWebhookSecret) {
		t.Fatal("the operator's run is not signed with WebhookSecret")
	}

	td, err := d.ForTenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := td.RotateWebhookSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rotated == secrets["acme"] {
		t.Fatal("rotation gave the same secret")
	}
	next := deliver("acme")
	if !verifies(next, rotated) || verifies(next, secrets["acme"]) {
		t.Fatalf("after rotation: with the new secret %v, the old %v", verifies(next, rotated), verifies(next, secrets["acme"]))
	}
}
