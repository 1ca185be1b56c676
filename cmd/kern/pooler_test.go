package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
)

// --pool-mode and KERN_POOL_MODE say what the database URL is; behind a
// transaction pooler migrate needs --direct-database-url (or
// KERN_DIRECT_DATABASE_URL) and says so.
func TestPoolModeFlagAndDirectURL(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := pgtest.NewDatabase(t)
	if r := kernExec(t, ctx, url, "", "migrate", "--pool-mode", "statement"); r.code == 0 || !strings.Contains(r.stderr, `pool mode "statement"`) {
		t.Fatalf("migrate --pool-mode statement: exit %d, stderr %q", r.code, r.stderr)
	}
	r := runKern(t, ctx, "", []string{"NO_COLOR=", "KERN_POOL_MODE=transaction"}, "--database-url", url, "migrate")
	if r.code == 0 || !strings.Contains(r.stderr, "direct URL") {
		t.Fatalf("KERN_POOL_MODE=transaction kern migrate: exit %d, stderr %q; want a refusal naming the direct URL", r.code, r.stderr)
	}
	r = runKern(t, ctx, "", []string{"NO_COLOR=", "KERN_POOL_MODE=transaction", "KERN_DIRECT_DATABASE_URL=" + url}, "--database-url", url, "migrate")
	if r.code != 0 {
		t.Fatalf("migrate with KERN_DIRECT_DATABASE_URL: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runKern(t, ctx, "", []string{"NO_COLOR="}, "--database-url", url, "--pool-mode", "transaction", "runs", "submit", "--agent", "idle", "--run-id", "p1", "hello")
	if r.code != 0 {
		t.Fatalf("runs submit --pool-mode transaction: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := kern(t, ctx, url, "runs", "list"); !strings.Contains(out, "p1") {
		t.Fatalf("runs list does not show p1:\n%s", out)
	}
}
