package pgtest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// pollEvery is how often waitFor retries. It is short because every
// condition here is a cheap local check (a stat, a query on an open
// connection).
const pollEvery = 10 * time.Millisecond

// waitFor retries cond until it reports true and fails t if that has not
// happened within timeout, naming what it waited for and cond's last error.
// This is how the tests wait for a server-side state, not by sleeping: a
// sleep is always too long on a fast machine, and on a slow one it lets a
// test go on before the state it needs.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("timed out after %v waiting for %s; last error: %v", timeout, what, err)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// fatalRecorder stands in for a testing.T whose Fatalf we want to see.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit() // what the real Fatalf does to the test goroutine
}

// runWaitFor runs waitFor against a recorder on its own goroutine, because
// the recorder's Fatalf ends the goroutine it is called on.
func runWaitFor(timeout time.Duration, cond func() (bool, error)) (fatal string) {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		waitFor(r, timeout, "the thing", cond)
	}()
	<-done
	return r.msg
}

func TestWaitFor(t *testing.T) {
	t.Run("succeeds once the condition holds", func(t *testing.T) {
		calls := 0
		msg := runWaitFor(10*time.Second, func() (bool, error) {
			calls++
			return calls == 3, errors.New("not yet")
		})
		if msg != "" {
			t.Fatalf("waitFor failed: %s", msg)
		}
		if calls != 3 {
			t.Errorf("condition ran %d times, want 3 (stop at the first true)", calls)
		}
	})
	t.Run("fails at the deadline with the last error", func(t *testing.T) {
		const timeout = 50 * time.Millisecond
		start := time.Now()
		msg := runWaitFor(timeout, func() (bool, error) { return false, errors.New("still down") })
		if took := time.Since(start); took < timeout {
			t.Errorf("gave up after %v, before the %v deadline", took, timeout)
		}
		for _, want := range []string{"waiting for the thing", "still down"} {
			if !strings.Contains(msg, want) {
				t.Errorf("failure %q does not mention %q", msg, want)
			}
		}
	})
}
