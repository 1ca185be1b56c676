package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// echoBatcher doubles numbers, failing the batch whenever it holds a
// negative one; it records every batch it sends. gate, when not nil, holds
// each send until a value arrives on it.
type echoBatcher struct {
	*batcher[int, int]
	mu      sync.Mutex
	batches [][]int
	gate    chan struct{}
}

func newEchoBatcher() *echoBatcher {
	e := &echoBatcher{}
	e.batcher = newBatcher(func(n int) string { return fmt.Sprint(n % 1000) }, func(ctx context.Context, items []int) ([]int, error) {
		e.mu.Lock()
		e.batches = append(e.batches, append([]int(nil), items...))
		gate := e.gate
		e.mu.Unlock()
		if gate != nil {
			<-gate
		}
		out := make([]int, len(items))
		for i, n := range items {
			if n < 0 {
				return nil, errors.New("negative")
			}
			out[i] = 2 * n
		}
		return out, nil
	})
	return e
}

func TestBatcherSharesRoundTripsAndKeepsResultsApart(t *testing.T) {
	e := newEchoBatcher()
	e.gate = make(chan struct{})
	const calls = 300
	var wg sync.WaitGroup
	var wrong atomic.Int32
	for i := range calls {
		wg.Go(func() {
			got, err := e.do(context.Background(), i)
			if err != nil || got != 2*i {
				wrong.Add(1)
			}
		})
	}
	// Hold the first round trips until every other call has queued behind
	// them: released as they arrive, calls could each find a round trip
	// free and go out alone, however well the batcher shares.
	waitFor(t, func() bool {
		e.batcher.mu.Lock()
		defer e.batcher.mu.Unlock()
		return len(e.queue) == calls-defaultMaxInFlight
	})
	close(e.gate)
	wg.Wait()
	if wrong.Load() != 0 {
		t.Fatalf("%d calls got another call's result or an error", wrong.Load())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.batches) >= calls/2 {
		t.Fatalf("%d calls took %d round trips: they were not batched", calls, len(e.batches))
	}
	for _, b := range e.batches {
		if len(b) > defaultMaxBatch {
			t.Fatalf("batch of %d items, limit %d", len(b), defaultMaxBatch)
		}
	}
}

func TestBatcherNeverPutsOneKeyTwiceInABatch(t *testing.T) {
	e := newEchoBatcher()
	e.gate = make(chan struct{})
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() { _, _ = e.do(context.Background(), 1000*(i%3)+7) }) // keys: all "7"
	}
	go func() {
		for range 200 {
			select {
			case e.gate <- struct{}{}:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}()
	wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		if len(b) != 1 {
			t.Fatalf("batch %v holds one key more than once", b)
		}
	}
	if len(e.batches) != 60 {
		t.Fatalf("%d batches for 60 calls of one key", len(e.batches))
	}
}

func TestBatcherIsolatesAFailingItem(t *testing.T) {
	e := newEchoBatcher()
	e.gate = make(chan struct{})
	// Hold the first batch so the rest queue up and go out together.
	first := make(chan error, 1)
	go func() { _, err := e.do(context.Background(), 1); first <- err }()
	waitFor(t, func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.batches) == 1 })
	second := make(chan error, 1)
	go func() { _, err := e.do(context.Background(), 2); second <- err }()
	waitFor(t, func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.batches) == 2 })

	var wg sync.WaitGroup
	results := make([]error, 10)
	for i := range results {
		wg.Go(func() {
			n := 10 + i
			if i == 4 {
				n = -14
			}
			got, err := e.do(context.Background(), n)
			if err == nil && got != 2*n {
				err = fmt.Errorf("got %d for %d", got, n)
			}
			results[i] = err
		})
	}
	waitFor(t, func() bool { e.batcher.mu.Lock(); defer e.batcher.mu.Unlock(); return len(e.queue) == 10 })
	close(e.gate)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	for i, err := range results {
		if (i == 4) != (err != nil) {
			t.Fatalf("item %d: error %v; only item 4 should fail", i, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.batches[2]) != 10 {
		t.Fatalf("the queued calls went out as %v, not as one batch", e.batches[2:])
	}
}

func TestBatcherWithdrawsACallWhoseContextEndsBeforeItIsSent(t *testing.T) {
	e := newEchoBatcher()
	e.gate = make(chan struct{})
	// Occupy every round trip, one batch after the other.
	var wg sync.WaitGroup
	for i := range defaultMaxInFlight {
		wg.Go(func() { _, _ = e.do(context.Background(), i) })
		waitFor(t, func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.batches) == i+1 })
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := e.do(ctx, 99); done <- err }()
	waitFor(t, func() bool { e.batcher.mu.Lock(); defer e.batcher.mu.Unlock(); return len(e.queue) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn call: %v, want context.Canceled", err)
	}
	close(e.gate)
	wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		for _, n := range b {
			if n == 99 {
				t.Fatal("a withdrawn call was sent")
			}
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
	}
}

func TestBatcherSendsNothingForAnEndedContext(t *testing.T) {
	e := newEchoBatcher()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.do(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.batches) != 0 {
		t.Fatalf("sent %v for a call whose context had ended", e.batches)
	}
}

func TestBatcherBoundsBatchesByBytes(t *testing.T) {
	e := newEchoBatcher()
	e.withSize(func(n int) int { return n * 1000 }) // item n weighs n kB
	e.maxBytes = 10_000
	e.gate = make(chan struct{})
	// Hold one batch so the rest queue up.
	go func() { _, _ = e.do(context.Background(), 1) }()
	waitFor(t, func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.batches) == 1 })
	go func() { _, _ = e.do(context.Background(), 2) }()
	waitFor(t, func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.batches) == 2 })

	var wg sync.WaitGroup
	for _, n := range []int{4, 5, 3, 30, 6} { // 30 alone exceeds the limit
		wg.Go(func() { _, _ = e.do(context.Background(), n) })
	}
	waitFor(t, func() bool { e.batcher.mu.Lock(); defer e.batcher.mu.Unlock(); return len(e.queue) == 5 })
	close(e.gate)
	wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches[2:] {
		total := 0
		for _, n := range b {
			total += n * 1000
		}
		if total > e.maxBytes && len(b) > 1 {
			t.Fatalf("batch %v weighs %d bytes, over the limit of %d", b, total, e.maxBytes)
		}
	}
	if len(e.batches) < 4 {
		t.Fatalf("batches %v: the queued calls cannot fit in one", e.batches)
	}
}

// roundTrips records every round trip a batcher makes: its items and the
// deadline it was given.
type roundTrips struct {
	mu        sync.Mutex
	items     [][]int
	deadlines []time.Time
}

func (r *roundTrips) record(ctx context.Context, items []int) {
	d, _ := ctx.Deadline() // zero if none: the tests catch that
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, append([]int(nil), items...))
	r.deadlines = append(r.deadlines, d)
}

// newCalls makes calls as take would hand them to send.
func newCalls(ns ...int) []*batchCall[int, int] {
	cs := make([]*batchCall[int, int], len(ns))
	for i, n := range ns {
		cs[i] = &batchCall[int, int]{in: n, taken: true, done: make(chan struct{})}
	}
	return cs
}

func TestBatcherGivesEveryRoundTripItsOwnDeadline(t *testing.T) {
	t.Parallel()
	// Every round trip uses up its whole deadline, as a statement stuck
	// behind a lock would. Had the items tried alone shared the batch's
	// deadline (or one among them), each after the first would start with
	// no time left.
	var rt roundTrips
	b := newBatcher(func(n int) string { return fmt.Sprint(n) }, func(ctx context.Context, items []int) ([]int, error) {
		rt.record(ctx, items)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	b.timeout = 20 * time.Millisecond
	calls := newCalls(3, 1, 2)
	b.send(calls)

	for _, c := range calls {
		<-c.done
		if !errors.Is(c.err, context.DeadlineExceeded) {
			t.Errorf("item %d: err = %v, want its own deadline exceeded", c.in, c.err)
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if want := [][]int{{1, 2, 3}, {1}, {2}, {3}}; fmt.Sprint(rt.items) != fmt.Sprint(want) {
		t.Fatalf("round trips %v, want the batch then each item alone: %v", rt.items, want)
	}
	for i, d := range rt.deadlines {
		if d.IsZero() {
			t.Fatalf("round trip %d had no deadline", i)
		}
		// Each round trip began once the one before had run out, so a
		// deadline of its own lies a whole timeout past the one before.
		if i > 0 && d.Sub(rt.deadlines[i-1]) < b.timeout {
			t.Errorf("round trip %d (%v) had a deadline %v after round trip %d's, want a fresh one at least %v later",
				i, rt.items[i], d.Sub(rt.deadlines[i-1]), i-1, b.timeout)
		}
	}
}

func TestBatcherTriesItemsAloneOnlyWhenPostgresIsThere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		err      error
		fallBack bool
	}{
		{"statement timeout", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, true},
		{"unique violation", fmt.Errorf("enqueue: %w", &pgconn.PgError{Code: "23505"}), true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"own deadline", fmt.Errorf("timeout: %w", context.DeadlineExceeded), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, false},
		{"connection failure", &pgconn.PgError{Code: "08006"}, false},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"connection closed by pgx", fmt.Errorf("kern: start run: %w", pgconn.ErrConnClosed), false},
		{"connection dropped", io.ErrUnexpectedEOF, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rt roundTrips
			// The batch fails as a whole; every item on its own is fine.
			b := newBatcher(func(n int) string { return fmt.Sprint(n) }, func(ctx context.Context, items []int) ([]int, error) {
				rt.record(ctx, items)
				if len(items) > 1 {
					return nil, tc.err
				}
				return []int{2 * items[0]}, nil
			})
			calls := newCalls(1, 2, 3)
			b.send(calls)

			rt.mu.Lock()
			trips := len(rt.items)
			rt.mu.Unlock()
			if tc.fallBack {
				if trips != 4 {
					t.Fatalf("%d round trips, want the batch and then each of its 3 items alone", trips)
				}
				for _, c := range calls {
					if c.err != nil || c.out != 2*c.in {
						t.Errorf("item %d: (%d, %v), want (%d, nil) from its own round trip", c.in, c.out, c.err, 2*c.in)
					}
				}
				return
			}
			if trips != 1 {
				t.Fatalf("%d round trips, want only the batch: Postgres is away, items alone would fail alike", trips)
			}
			for _, c := range calls {
				if !errors.Is(c.err, tc.err) {
					t.Errorf("item %d: err = %v, want the batch's %v", c.in, c.err, tc.err)
				}
			}
		})
	}
}

func TestBatcherStopsTryingItemsAloneOncePostgresIsAway(t *testing.T) {
	t.Parallel()
	away := &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}
	var rt roundTrips
	b := newBatcher(func(n int) string { return fmt.Sprint(n) }, func(ctx context.Context, items []int) ([]int, error) {
		rt.record(ctx, items)
		if len(items) > 1 {
			return nil, &pgconn.PgError{Code: "57014"} // Postgres is there: try items alone
		}
		if items[0] == 2 {
			return nil, away // and then it goes away
		}
		return []int{2 * items[0]}, nil
	})
	calls := newCalls(1, 2, 3, 4)
	b.send(calls)

	rt.mu.Lock()
	defer rt.mu.Unlock()
	if want := [][]int{{1, 2, 3, 4}, {1}, {2}}; fmt.Sprint(rt.items) != fmt.Sprint(want) {
		t.Fatalf("round trips %v, want %v", rt.items, want)
	}
	if c := calls[0]; c.err != nil || c.out != 2 {
		t.Errorf("item 1: (%d, %v), want (2, nil)", c.out, c.err)
	}
	for _, c := range calls[1:] {
		if !errors.Is(c.err, away) || !transient(c.err) {
			t.Errorf("item %d: err = %v, want the transient %v", c.in, c.err, away)
		}
	}
}
