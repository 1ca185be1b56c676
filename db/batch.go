package db

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// batcher gathers concurrent calls of one statement into one round trip —
// group commit. A call that finds a round trip free goes out at once, alone;
// calls that arrive while round trips are in flight wait for the next one
// and share it. So a lone run pays no extra latency, while a busy worker
// pays Postgres's per-statement and per-commit costs (and the notification
// queue's lock, taken once per committing transaction) once per batch
// instead of once per run.
//
// Each batch is one statement, so it is one transaction: items in it are
// still individually conditional (fenced) and independent of each other.
// If a batch fails for a reason other than Postgres being away, its items
// are tried one by one, so one bad item cannot fail the others.
//
// Every round trip — the batch, then each item tried alone — gets its own
// deadline of timeout, so an item tried late in a fallback has the same
// chance as the first, and a batch of n items that falls back takes at most
// (n+1) round trips' timeouts. Once an item tried alone finds Postgres away,
// the rest are not tried: each would only fail the same way, slowly.
type batcher[In, Out any] struct {
	key         func(In) string // no two items with one key share a batch
	size        func(In) int    // bytes an item adds to a statement; nil: small
	exec        func(ctx context.Context, items []In) ([]Out, error)
	timeout     time.Duration // of each round trip
	maxBatch    int
	maxBytes    int
	maxInFlight int

	mu       sync.Mutex
	queue    []*batchCall[In, Out]
	inFlight int
}

type batchCall[In, Out any] struct {
	in    In
	out   Out
	err   error
	taken bool // by a batch: from then on its outcome must be waited for
	done  chan struct{}
}

// Sizes of every batcher: batches of up to 128 items and (but for a single
// larger item) 4 MiB, at most 2 of one statement in flight, each round
// trip (a batch, or one item of a failed batch tried alone) given up to
// batchTimeout of its own.
const (
	defaultMaxBatch    = 128
	defaultMaxBytes    = 4 << 20
	defaultMaxInFlight = 2
	batchTimeout       = 30 * time.Second
)

func newBatcher[In, Out any](key func(In) string, exec func(context.Context, []In) ([]Out, error)) *batcher[In, Out] {
	return &batcher[In, Out]{key: key, exec: exec, timeout: batchTimeout, maxBatch: defaultMaxBatch, maxBytes: defaultMaxBytes, maxInFlight: defaultMaxInFlight}
}

// withSize bounds batches by the bytes of their items, not only by count.
func (b *batcher[In, Out]) withSize(size func(In) int) *batcher[In, Out] {
	b.size = size
	return b
}

// do runs in as part of a batch and returns its outcome. When ctx ends
// before a batch took the item, it is withdrawn; once taken, its outcome is
// waited for, because the statement may already have applied it.
func (b *batcher[In, Out]) do(ctx context.Context, in In) (Out, error) {
	if err := ctx.Err(); err != nil {
		var zero Out
		return zero, err
	}
	c := &batchCall[In, Out]{in: in, done: make(chan struct{})}
	b.mu.Lock()
	if len(b.queue) == 0 && b.inFlight < b.maxInFlight {
		// Nothing to share a round trip with: send it from here, without
		// handing it to another goroutine and back.
		b.inFlight++
		c.taken = true
		b.mu.Unlock()
		b.send([]*batchCall[In, Out]{c})
		b.mu.Lock()
		if len(b.queue) > 0 {
			go b.drain() // keeps this round trip's slot
		} else {
			b.inFlight--
		}
		b.mu.Unlock()
		return c.out, c.err
	}
	b.queue = append(b.queue, c)
	if b.inFlight < b.maxInFlight {
		b.inFlight++
		go b.drain()
	}
	b.mu.Unlock()

	select {
	case <-c.done:
		return c.out, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if !c.taken {
		b.queue = slices.DeleteFunc(b.queue, func(q *batchCall[In, Out]) bool { return q == c })
		b.mu.Unlock()
		var zero Out
		return zero, ctx.Err()
	}
	b.mu.Unlock()
	<-c.done
	return c.out, c.err
}

// drain sends batches until the queue is empty.
func (b *batcher[In, Out]) drain() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.send(batch)
	}
}

// take removes the next batch from the queue: up to maxBatch calls (and
// maxBytes) in arrival order, skipping (and keeping queued) a call whose
// key is in the batch already. Called with mu held.
func (b *batcher[In, Out]) take() []*batchCall[In, Out] {
	var batch []*batchCall[In, Out]
	keys := make(map[string]struct{}, min(len(b.queue), b.maxBatch))
	rest := b.queue[:0]
	bytes := 0
	for _, c := range b.queue {
		k := b.key(c.in)
		size := 0
		if b.size != nil {
			size = b.size(c.in)
		}
		_, dup := keys[k]
		if dup || len(batch) == b.maxBatch || (len(batch) > 0 && bytes+size > b.maxBytes) {
			rest = append(rest, c)
			continue
		}
		bytes += size
		keys[k] = struct{}{}
		c.taken = true
		batch = append(batch, c)
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	return batch
}

// send runs one batch and hands every call its outcome. Items are sent in
// key order, so two batches that touch the same rows lock them in the same
// order and cannot deadlock each other.
func (b *batcher[In, Out]) send(batch []*batchCall[In, Out]) {
	slices.SortFunc(batch, func(x, y *batchCall[In, Out]) int { return strings.Compare(b.key(x.in), b.key(y.in)) })
	items := make([]In, len(batch))
	for i, c := range batch {
		items[i] = c.in
	}
	outs, err := b.roundTrip(items)
	switch {
	case err == nil:
		for i, c := range batch {
			c.out = outs[i]
		}
	case len(batch) > 1 && !transient(err):
		// Not Postgres away (a bad item, a statement timeout, a deadlock,
		// this round trip's own deadline): find out item by item which fail.
		b.sendEach(batch)
	default:
		for _, c := range batch {
			c.err = err
		}
	}
	for _, c := range batch {
		close(c.done)
	}
}

// sendEach tries the items of a failed batch one by one, in the batch's
// order. Once one finds Postgres away, the rest get that error untried.
func (b *batcher[In, Out]) sendEach(batch []*batchCall[In, Out]) {
	var away error
	for _, c := range batch {
		if away != nil {
			c.err = fmt.Errorf("not tried alone after its batch failed, as Postgres was away: %w", away)
			continue
		}
		one, err := b.roundTrip([]In{c.in})
		if err == nil {
			c.out = one[0]
		} else if transient(err) {
			away = err
		}
		c.err = err
	}
}

// roundTrip runs one statement under a deadline of its own. It does not
// inherit any caller's context: once items are sent, their outcome must be
// learned, whichever caller stopped waiting.
func (b *batcher[In, Out]) roundTrip(items []In) ([]Out, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	return b.exec(ctx, items)
}
