package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/kern-go/kern/run"
)

// contentBuffer batches streamed content into few writes: it flushes when
// flushBytes have gathered or flushEvery after the first unflushed delta,
// never once per token. Whatever is unflushed at the end is the tail the
// final status write appends, so a fast answer costs no flush at all.
//
// Every write names the event seq it takes, so it applies at most once
// (see engine.Store.AppendContent). A write whose outcome is unknown — the
// connection dropped, the reply timed out, possibly after the commit — is
// kept aside as in doubt and sent again, exactly as it was and at the same
// seq, before anything else: it ends up in the run once whether or not the
// first try had committed, and new text never overtakes it.
type contentBuffer struct {
	flushEvery time.Duration
	flushBytes int
	write      func(ctx context.Context, seq int64, delta string) error
	onLost     func() // the execution lost the run: stop it
	onFailure  func(error)

	// writing serialises writes so content is appended in stream order; it is
	// taken before mu, and held across the write.
	writing sync.Mutex

	mu      sync.Mutex
	pending strings.Builder
	timer   *time.Timer
	closed  bool
	lost    bool
	warned  bool
	// seq is the run's last event seq as far as this execution knows; the
	// next write takes seq+1.
	seq int64
	// doubt is the text of a write (at seq+1) whose outcome is unknown.
	doubt string
}

func newContentBuffer(every time.Duration, bytes int, seq int64, write func(context.Context, int64, string) error,
	onLost func(), onFailure func(error)) *contentBuffer {
	return &contentBuffer{flushEvery: every, flushBytes: bytes, seq: seq, write: write, onLost: onLost, onFailure: onFailure}
}

// flushTimeout bounds one content write.
const flushTimeout = 30 * time.Second

// add takes one delta from the stream. A full buffer is flushed before add
// returns, so a fast stream is slowed to what Postgres absorbs.
func (b *contentBuffer) add(delta string) {
	b.mu.Lock()
	b.pending.WriteString(delta)
	if b.closed || b.lost {
		b.mu.Unlock()
		return
	}
	full := b.pending.Len() >= b.flushBytes
	if !full && b.timer == nil {
		b.timer = time.AfterFunc(b.flushEvery, b.flush)
	}
	b.mu.Unlock()
	if full {
		b.flush()
	}
}

// flush writes what is in doubt, then what is pending.
func (b *contentBuffer) flush() {
	b.writing.Lock()
	defer b.writing.Unlock()

	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.closed || b.lost {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()

	// A write is not abandoned halfway because the run is being cancelled:
	// what was flushed is what the run keeps.
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if !b.settleDoubt(ctx) {
		return
	}
	b.mu.Lock()
	if b.pending.Len() == 0 {
		b.mu.Unlock()
		return
	}
	b.doubt = b.pending.String()
	b.pending.Reset()
	b.mu.Unlock()
	b.settleDoubt(ctx)
}

// settleDoubt sends the write in doubt, if any, once. It reports whether
// nothing is in doubt any more. Called with writing held.
func (b *contentBuffer) settleDoubt(ctx context.Context) bool {
	b.mu.Lock()
	text, seq := b.doubt, b.seq+1
	b.mu.Unlock()
	if text == "" {
		return true
	}
	err := b.write(ctx, seq, text)
	b.mu.Lock()
	lost, warn := false, false
	switch {
	case err == nil:
		b.doubt, b.seq = "", seq
	case errors.Is(err, run.ErrNotRunning):
		lost, b.lost = !b.lost, true
	default:
		warn, b.warned = !b.warned, true
	}
	b.mu.Unlock()
	if lost {
		b.onLost()
	}
	if warn {
		b.onFailure(err)
	}
	return err == nil
}

// close stops flushing, waits for a write in flight, settles a write in
// doubt (sending it again until ctx ends), and returns the tail for the
// final write. run.ErrNotRunning means the execution lost the run; another
// error, that the write in doubt could not be settled before ctx ended.
func (b *contentBuffer) close(ctx context.Context) (string, error) {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.mu.Unlock()

	b.writing.Lock()
	defer b.writing.Unlock()
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if b.isLost() {
			return "", run.ErrNotRunning
		}
		attemptCtx, cancel := context.WithTimeout(ctx, flushTimeout)
		settled := b.settleDoubt(attemptCtx)
		cancel()
		if settled {
			break
		}
		if b.isLost() {
			return "", run.ErrNotRunning
		}
		select {
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-time.After(wait):
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending.String(), nil
}

// lastSeq is the run's last event seq as far as the buffer knows: after
// close, the next write of the execution takes lastSeq()+1.
func (b *contentBuffer) lastSeq() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

func (b *contentBuffer) isLost() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lost
}
