package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Retryable reports whether a failed model call is worth another attempt:
// rate limits (429), timeouts (408), server errors (5xx), connection
// errors and streams that broke off. Other 4xx — bad requests, context
// length, auth — fail the same way every time.
func Retryable(err error) bool {
	var me *ModelError
	if !errors.As(err, &me) {
		return false
	}
	return me.Retryable
}

func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500
}

// maxRetryDelay caps both the backoff and a provider's Retry-After.
const maxRetryDelay = 5 * time.Minute

// retryDelay is exponential backoff with jitter from base (attempt 1 waits
// about base, attempt 2 about 2×base, …), unless the provider said how long
// to wait.
func retryDelay(err error, attempt int, base time.Duration) time.Duration {
	var me *ModelError
	if errors.As(err, &me) && me.RetryAfter > 0 {
		return min(me.RetryAfter, maxRetryDelay)
	}
	d := base << min(max(attempt-1, 0), 16)
	if d <= 0 || d > maxRetryDelay {
		d = maxRetryDelay
	}
	// Full jitter in [d/2, d]: retries of many runs failed together spread out.
	return d/2 + rand.N(d/2+1)
}

// retryAfterKey carries a per-call record through go-openai, which does not
// expose response headers, down to the transport that can see them.
type retryAfterKey struct{}

type retryAfterRecord struct{ d atomic.Int64 }

// retryAfterTransport notes the Retry-After header of error responses.
type retryAfterTransport struct{ base http.RoundTripper }

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	if rec, ok := req.Context().Value(retryAfterKey{}).(*retryAfterRecord); ok {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			rec.d.Store(int64(d))
		}
	}
	return resp, nil
}

func withRetryAfterRecord(ctx context.Context) (context.Context, *retryAfterRecord) {
	rec := &retryAfterRecord{}
	return context.WithValue(ctx, retryAfterKey{}, rec), rec
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs > maxRetryDelay.Seconds() {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
