package fakellm

import (
	"strconv"
	"sync"
	"time"
)

// RateLimiter is a provider's rate limit in front of a script: it counts
// the requests that arrive in a sliding window and answers those above
// Limit with 429 and a Retry-After (fractional seconds) saying when the
// oldest request in the window leaves it. Install it with
// s.Script(rl.Script(next)). It records every arrival, accepted or not, so
// tests can check what the model saw in any window.
type RateLimiter struct {
	Limit  int
	Window time.Duration

	mu       sync.Mutex
	accepted []time.Time // in the window, oldest first
	arrivals []Arrival
}

// Arrival is one request the limiter saw.
type Arrival struct {
	At       time.Time
	Model    string
	Prompt   string // the last user message
	Rejected bool   // answered 429
}

// NewRateLimiter limits to limit requests per window.
func NewRateLimiter(limit int, window time.Duration) *RateLimiter {
	return &RateLimiter{Limit: limit, Window: window}
}

// Script wraps next (nil: DefaultReply) with the limit.
func (l *RateLimiter) Script(next func(Request) Reply) func(Request) Reply {
	if next == nil {
		next = DefaultReply
	}
	return func(req Request) Reply {
		now := time.Now()
		l.mu.Lock()
		i := 0
		for i < len(l.accepted) && now.Sub(l.accepted[i]) >= l.Window {
			i++
		}
		l.accepted = l.accepted[i:]
		if l.Limit > 0 && len(l.accepted) >= l.Limit {
			wait := l.Window - now.Sub(l.accepted[0])
			l.arrivals = append(l.arrivals, Arrival{At: now, Model: req.Model, Prompt: req.LastUserMessage(), Rejected: true})
			l.mu.Unlock()
			return Reply{Status: 429, ErrorMessage: "rate limit exceeded",
				RetryAfter: strconv.FormatFloat(max(wait.Seconds(), 0.001), 'f', 3, 64)}
		}
		l.accepted = append(l.accepted, now)
		l.arrivals = append(l.arrivals, Arrival{At: now, Model: req.Model, Prompt: req.LastUserMessage()})
		l.mu.Unlock()
		return next(req)
	}
}

// Arrivals returns every request seen, in arrival order.
func (l *RateLimiter) Arrivals() []Arrival {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Arrival(nil), l.arrivals...)
}

// Rejected counts the requests answered 429.
func (l *RateLimiter) Rejected() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.arrivals {
		if a.Rejected {
			n++
		}
	}
	return n
}

// MaxInWindow is the most arrivals (accepted or not) in any window of
// length w.
func MaxInWindow(arrivals []Arrival, w time.Duration) int {
	best, j := 0, 0
	for i := range arrivals {
		for arrivals[i].At.Sub(arrivals[j].At) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
