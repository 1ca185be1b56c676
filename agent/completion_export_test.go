package agent

import "time"

// SetWebhookTestKnobs shortens webhook retries for tests: attempts per
// delivery, the delay between attempts, one attempt's timeout (0: the
// default), and the outbox ticker.
func SetWebhookTestKnobs(cfg *WorkerConfig, maxAttempts int, backoff, timeout, outboxTick time.Duration) {
	cfg.webhookMaxAttempts, cfg.webhookBackoff, cfg.webhookTimeout, cfg.outboxEvery = maxAttempts, backoff, timeout, outboxTick
}

// SetSessionAttemptTimeout sets the deadline of w's first attempt at
// opening its Postgres session (worker_session.go); call it before Start.
func SetSessionAttemptTimeout(w *Worker, d time.Duration) { w.sessionAttempt = d }
