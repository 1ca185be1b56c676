package db

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	// Let batches through until every call is answered.
	go func() {
		for {
			select {
			case e.gate <- struct{}{}:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}()
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
