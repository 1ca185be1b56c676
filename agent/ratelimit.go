package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

// Rate limits shared by the fleet (db.DB.SetRateLimit), as an execution
// sees them. Before each model turn of a model with a limit, the execution
// reserves one request and an estimate of the turn's tokens; when the
// fleet's budget has no room, the run waits, in its worker slot, still
// running:
//
//   - visibly: a run.throttled {"model","wait_ms"} event when the wait
//     starts, and Output.Error says why ("waits for the rate limit of model
//     X (N requests/min)") until the call starts;
//   - without burning an attempt (nothing failed), and without its
//     execution timeout ticking: the timer is paused while it waits and
//     goes on with what was left once the call is allowed. CancelRun still
//     interrupts the wait at once, and a stopping worker hands the run back
//     (it leaves its place in the queue; the next worker asks again);
//   - in order: budget that frees goes to the waiting runs by priority,
//     then submit order, across every worker (see db's doc).
//
// While the budget is far from binding, the reservation costs no round
// trip: the worker process spends a lease of the budget it took in one
// statement (db's "Budget leases"), and a run never waits.
//
// After the call, the grant is reconciled with the usage the model
// reported (only for a model with a token budget; a lease's call is
// reconciled locally and written with the next statement). A 429 of a
// limited model pauses the model for the fleet for its Retry-After (1 s
// without one; the worker's lease of it is dropped at once) and, since
// nothing was streamed, the turn is asked again after the pause, in the
// same attempt: a run does not fail for rate reasons. (A 429
// of a model without a limit is retried as before, attempt by attempt.)
//
// A model is named by its id (OpenAIChat.ID, OpenAIResponses.ID, or a
// Model with a ModelID() string method); a Model without one is never
// limited.

// maxRateRetries bounds the turns asked again after a 429 of a limited
// model within one attempt; past it, the 429 is an ordinary retryable error.
const maxRateRetries = 20

// defaultRatePause is the fleet's pause after a 429 without Retry-After.
const defaultRatePause = time.Second

// maxRatePoll is the longest a waiting run sleeps before asking again: it
// keeps its place in the queue by asking (db drops a waiter unseen for 5 s).
const maxRatePoll = time.Second

// modelID is the id a rate limit names the model by, "" when it has none.
func modelID(m Model) string {
	switch m := m.(type) {
	case *tracedModel: // the worker's telemetry wrapper
		return m.id
	case OpenAIChat:
		return m.ID
	case *OpenAIChat:
		return m.ID
	case OpenAIResponses:
		return m.ID
	case *OpenAIResponses:
		return m.ID
	case interface{ ModelID() string }:
		return m.ModelID()
	}
	return ""
}

// estimateTokens is what a reservation counts before the call: the
// characters of every message, tool call and tool definition (and the
// output schema) divided by 4 — about a token per 4 characters of English —
// plus one. kern does not know the output's length beforehand (no max
// output tokens is set), so it counts none; the reconciliation after the
// call adds it.
func estimateTokens(req *ModelRequest) int {
	n := 0
	for _, m := range req.Messages {
		n += len(m.Role) + len(m.Content) + len(m.ToolCallID)
		for _, c := range m.ToolCalls {
			n += len(c.ID) + len(c.Name) + len(c.Arguments)
		}
	}
	for _, t := range req.Tools {
		n += len(t.Name) + len(t.Description)
		if b, err := json.Marshal(t.Parameters); err == nil {
			n += len(b)
		}
	}
	if req.OutputSchema != nil {
		if b, err := json.Marshal(req.OutputSchema); err == nil {
			n += len(b)
		}
	}
	return n/4 + 1
}

// limiter is the executor's rate limits, nil when its store has none.
func (e *executor) limiter() engine.RateLimiter {
	s := e.store
	if t, ok := s.(telemetryStore); ok { // the worker's telemetry wrapper
		s = t.Store
	}
	if p, ok := s.(engine.RateLimited); ok {
		return p.RateLimiter(engine.Key{})
	}
	return nil
}

// rateSlot is a granted reservation, for release.
type rateSlot struct {
	rl      engine.RateLimiter
	grant   engine.Grant
	retries int
}

// acquire reserves the budget of the turn about to be asked, waiting for it
// as long as it takes. It returns a nil slot for a model without a limit.
// ended is set when the run's context ended while waiting (the turn is not
// asked; the execution ends as for any cause); err only when the throttle
// could not be written (run.ErrNotRunning: the run was lost).
func (x *execution) acquire(runCtx, ctx context.Context, req *ModelRequest, prev *rateSlot) (slot *rateSlot, ended, err error) {
	rl := x.e.limiter()
	id := modelID(x.model)
	if rl == nil || id == "" || !rl.Limited(id) {
		return nil, nil, nil
	}
	r := engine.Reservation{Fence: x.fence, Model: id, Tokens: estimateTokens(req)}
	var resume func()
	defer func() {
		if resume != nil {
			resume()
		}
	}()
	var started time.Time
	for failures := 0; ; {
		g, rerr := rl.Reserve(runCtx, r)
		wait := g.Wait
		switch {
		case rerr != nil && runCtx.Err() != nil:
			return x.withdraw(ctx, rl, r), context.Cause(runCtx), nil
		case rerr != nil:
			// Postgres away: ask again, a little later each time.
			if failures++; failures == 1 {
				x.log.WarnContext(ctx, "kern: reserving the rate-limit budget failed; asking again", slog.Any("error", rerr))
			}
			wait = min(time.Duration(failures)*100*time.Millisecond, 2*time.Second)
		case g.OK:
			if r.Waited {
				x.log.DebugContext(ctx, "kern: rate-limit wait over", slog.String("model", id), slog.Duration("waited", time.Since(started)))
			}
			s := &rateSlot{rl: rl, grant: g}
			if prev != nil {
				s.retries = prev.retries
			}
			return s, nil, nil
		case !r.Waited:
			// The wait starts: the timeout stops, and the run says why.
			r.Waited, started = true, time.Now()
			if x.timer != nil {
				resume = x.timer.pause()
			}
			seq := x.seq + 1
			why := throttleReason(id, g)
			if err := x.write(ctx, func(wctx context.Context) error {
				return rl.Throttled(wctx, x.fence, seq, id, g.Wait, why)
			}); err != nil {
				return nil, nil, err
			}
			x.seq = seq
			x.log.InfoContext(ctx, "kern: run throttled", slog.String("model", id), slog.String("reason", g.Reason), slog.Duration("wait", g.Wait))
		}
		// A little jitter, so the waiters of a fleet do not all ask in the
		// same millisecond; the queue keeps their order anyway.
		wait = min(max(wait, time.Millisecond), maxRatePoll) + rand.N(5*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-runCtx.Done():
			t.Stop()
			return x.withdraw(ctx, rl, r), context.Cause(runCtx), nil
		case <-t.C:
		}
	}
}

// withdraw gives up the run's place in the queue (best effort: a place not
// given up lapses after 5 s); it returns nil, for acquire's slot.
func (x *execution) withdraw(ctx context.Context, rl engine.RateLimiter, r engine.Reservation) *rateSlot {
	if !r.Waited {
		return nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOffTimeout)
	defer cancel()
	if err := rl.Withdraw(wctx, x.fence, r.Model); err != nil {
		x.log.DebugContext(ctx, "kern: leaving the rate-limit queue failed; the place lapses", slog.Any("error", err))
	}
	return nil
}

// throttleReason is Output.Error while the run waits.
func throttleReason(model string, g engine.Grant) string {
	switch g.Reason {
	case "paused":
		return fmt.Sprintf("waits for the rate limit of model %s (paused by the provider: HTTP 429)", model)
	case "tokens":
		return fmt.Sprintf("waits for the rate limit of model %s (%d tokens/min)", model, g.TokensPerMinute)
	}
	var parts string
	switch {
	case g.RequestsPerMinute > 0 && g.TokensPerMinute > 0:
		parts = fmt.Sprintf("%d requests/min, %d tokens/min", g.RequestsPerMinute, g.TokensPerMinute)
	case g.TokensPerMinute > 0:
		parts = fmt.Sprintf("%d tokens/min", g.TokensPerMinute)
	default:
		parts = fmt.Sprintf("%d requests/min", g.RequestsPerMinute)
	}
	if g.Reason == "queue" {
		return fmt.Sprintf("waits for the rate limit of model %s (%s; runs that come first wait too)", model, parts)
	}
	return fmt.Sprintf("waits for the rate limit of model %s (%s)", model, parts)
}

// release settles a granted turn: the grant is reconciled with the usage
// reported, and a 429 pauses the model for the fleet. It reports whether the
// turn is to be asked again (a 429 before any content).
func (x *execution) release(ctx context.Context, s *rateSlot, t turnResult) bool {
	if s == nil {
		return false
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOffTimeout)
	defer cancel()
	if t.resp != nil && s.grant.TokenLimited {
		used := t.resp.Usage.TotalTokens
		if used == 0 {
			used = t.resp.Usage.InputTokens + t.resp.Usage.OutputTokens
		}
		if used > 0 {
			if err := s.rl.Reconcile(wctx, s.grant, used); err != nil {
				x.log.DebugContext(ctx, "kern: reconciling the token budget failed; the estimate stays counted", slog.Any("error", err))
			}
		}
	}
	var me *ModelError
	if t.err == nil || !errors.As(t.err, &me) || me.StatusCode != http.StatusTooManyRequests {
		return false
	}
	pause := me.RetryAfter
	if pause <= 0 {
		pause = defaultRatePause
	}
	pause = min(pause, maxRetryDelay)
	if err := s.rl.Pause(wctx, s.grant.Model, pause); err != nil {
		x.log.WarnContext(ctx, "kern: pausing the model for the fleet failed", slog.Any("error", err))
	}
	x.log.InfoContext(ctx, "kern: model answered 429; paused for the fleet", slog.String("model", s.grant.Model), slog.Duration("pause", pause))
	if t.size > 0 || s.retries >= maxRateRetries {
		return false
	}
	s.retries++
	return true
}

// runTimer is a run's execution timeout that can be paused (while the run
// waits for a rate limit): the time left is kept and runs on at resume.
type runTimer struct {
	mu      sync.Mutex
	left    time.Duration
	since   time.Time // when it last (re)started
	timer   *time.Timer
	paused  int
	fire    func()
	stopped bool
}

// withRunTimeout is context.WithTimeoutCause with a pausable timer. The
// context has no Deadline: the deadline moves while paused.
func withRunTimeout(parent context.Context, d time.Duration, cause error) (context.Context, *runTimer, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	t := &runTimer{left: d, since: time.Now(), fire: func() { cancel(cause) }}
	t.timer = time.AfterFunc(d, t.fire)
	return ctx, t, func() {
		t.mu.Lock()
		t.stopped = true
		t.timer.Stop()
		t.mu.Unlock()
		cancel(context.Canceled)
	}
}

// pause stops the clock until the returned func is called (once).
func (t *runTimer) pause() (resume func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused == 0 && !t.stopped {
		if t.timer.Stop() {
			t.left -= time.Since(t.since)
		} else {
			t.left = 0 // it fired already
		}
	}
	t.paused++
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.paused--; t.paused == 0 && !t.stopped {
				t.since = time.Now()
				t.timer = time.AfterFunc(max(t.left, 0), t.fire)
			}
		})
	}
}
