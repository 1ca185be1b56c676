package agent

import (
	"context"
	"strings"
	"sync"
	"time"
)

// contentBuffer batches streamed content into few writes: it flushes when
// flushBytes have gathered or flushEvery after the first unflushed delta,
// never once per token. Whatever is unflushed at the end is the tail the
// final status write appends, so a fast answer costs no flush at all.
type contentBuffer struct {
	flushEvery time.Duration
	flushBytes int
	write      func(ctx context.Context, delta string) error
	onError    func(error) // called once, on the first failed write

	// writing serialises writes so content is appended in stream order; it is
	// taken before mu, and held across the write.
	writing sync.Mutex

	mu      sync.Mutex
	pending strings.Builder
	timer   *time.Timer
	closed  bool
	failed  bool
}

func newContentBuffer(every time.Duration, bytes int, write func(context.Context, string) error, onError func(error)) *contentBuffer {
	return &contentBuffer{flushEvery: every, flushBytes: bytes, write: write, onError: onError}
}

// add takes one delta from the stream. A full buffer is flushed before add
// returns, so a fast stream is slowed to what Postgres absorbs.
func (b *contentBuffer) add(delta string) {
	b.mu.Lock()
	if b.closed || b.failed {
		b.pending.WriteString(delta)
		b.mu.Unlock()
		return
	}
	b.pending.WriteString(delta)
	full := b.pending.Len() >= b.flushBytes
	if !full && b.timer == nil {
		b.timer = time.AfterFunc(b.flushEvery, b.flush)
	}
	b.mu.Unlock()
	if full {
		b.flush()
	}
}

// flush writes what is pending. On failure the text goes back to the front
// of the buffer, so it is still part of the tail.
func (b *contentBuffer) flush() {
	b.writing.Lock()
	defer b.writing.Unlock()

	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.closed || b.failed || b.pending.Len() == 0 {
		b.mu.Unlock()
		return
	}
	text := b.pending.String()
	b.pending.Reset()
	b.mu.Unlock()

	// A write is not abandoned halfway because the run is being cancelled:
	// what was flushed is what the run keeps.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := b.write(ctx, text)
	cancel()
	if err == nil {
		return
	}
	b.mu.Lock()
	rest := b.pending.String()
	b.pending.Reset()
	b.pending.WriteString(text)
	b.pending.WriteString(rest)
	b.failed = true
	b.mu.Unlock()
	b.onError(err)
}

// close stops flushing, waits for a write in flight, and returns the tail.
func (b *contentBuffer) close() string {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.mu.Unlock()

	b.writing.Lock()
	defer b.writing.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending.String()
}
