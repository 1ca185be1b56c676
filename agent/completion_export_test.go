package agent

import (
	"context"
	"net/netip"
	"time"
)

// SetWebhookTestKnobs shortens webhook retries for tests: attempts per
// delivery, the delay between attempts, one attempt's timeout (0: the
// default), and the outbox ticker.
func SetWebhookTestKnobs(cfg *WorkerConfig, maxAttempts int, backoff, timeout, outboxTick time.Duration) {
	cfg.webhookMaxAttempts, cfg.webhookBackoff, cfg.webhookTimeout, cfg.outboxEvery = maxAttempts, backoff, timeout, outboxTick
}

// SetWebhookLookup makes the worker resolve the hosts of tenants' webhooks
// with lookup instead of the system's resolver.
func SetWebhookLookup(cfg *WorkerConfig, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	cfg.webhookLookup = lookup
}

// SetSessionAttemptTimeout sets the deadline of w's first attempt at
// opening its Postgres session (worker_session.go); call it before Start.
func SetSessionAttemptTimeout(w *Worker, d time.Duration) { w.sessionAttempt = d }
