package engine

import (
	"context"
	"time"
)

// RateLimited is implemented by the Store db hands out: it gives access to
// the fleet's rate limits (db.DB.SetRateLimit). It is a separate interface,
// so Store stays as it is; the agent side type-asserts its Store to it.
type RateLimited interface {
	RateLimiter(Key) RateLimiter
}

// RateLimiter is what an execution needs of the fleet's rate limits: one
// reservation before each model call, its reconciliation after, and the
// pause a provider's 429 + Retry-After asks for.
type RateLimiter interface {
	// Limited reports whether model has a limit (or a pause) on file, from
	// the process's cache (refreshed about every second): a model without
	// one costs a map lookup, no round trip.
	Limited(model string) bool
	// Reserve asks for one request and r.Tokens tokens of r.Model's budget.
	// While the budget is far from binding it is spent from the process's
	// lease (no round trip); otherwise concurrent reservations share a
	// round trip (one statement). A reservation that Waited always takes
	// the exact path, so waiters keep their order.
	Reserve(ctx context.Context, r Reservation) (Grant, error)
	// Reconcile replaces a grant's estimate with the tokens the call
	// reported. A grant with ID 0 (no token accounting) is a no-op; a
	// lease's is noted locally and written with the process's next
	// statement on the model (or within a quarter second).
	Reconcile(ctx context.Context, g Grant, tokens int) error
	// Pause stops every worker's calls of model for d (a 429's Retry-After),
	// and this process's at once: its lease of model is dropped first.
	Pause(ctx context.Context, model string, d time.Duration) error
	// Throttled writes the run's run.throttled {"model","wait_ms"} event at
	// seq and sets its error to why, fenced like a content write; the error
	// is cleared by the reservation that is granted after the wait.
	Throttled(ctx context.Context, f Fence, seq int64, model string, wait time.Duration, why string) error
	// Withdraw removes the run's place in model's queue of waiters (it
	// stopped waiting without a grant).
	Withdraw(ctx context.Context, f Fence, model string) error
	// SetWindow changes model's window, for tests only (the contract is 60 s).
	SetWindow(ctx context.Context, model string, window time.Duration) error
}

// Reservation is one model call's ask.
type Reservation struct {
	Fence
	Model  string
	Tokens int  // the estimate (see agent's estimateTokens)
	Waited bool // it was refused before, in this wait
}

// Grant is a reservation's answer.
type Grant struct {
	OK    bool
	ID    int64  // the grant's row, 0 when the model counts nothing
	Model string // the reservation's
	// For a refusal: how long until it may succeed, and why ("requests",
	// "tokens", "paused", "queue").
	Wait                               time.Duration
	Reason                             string
	RequestsPerMinute, TokensPerMinute int
	TokenLimited                       bool
	// Lease: granted from the process's lease (ID is the lease's grant,
	// shared by its calls); Tokens is what the grant counts for this call
	// (the estimate), which Reconcile corrects.
	Lease  bool
	Tokens int
}
