package server

import (
	"bytes"
	"context"
	"sort"
	"sync"

	"github.com/kern-go/kern/db"
)

// hubs shares one reader of a run's event log among all of this process's
// streams of the run. Without it, each follower would read the log on each
// change: a thousand followers, a thousand queries per content flush, all
// queued on the pool.
type hubs struct {
	d  *db.DB
	mu sync.Mutex
	m  map[string]*hub
}

func newHubs(d *db.DB) *hubs { return &hubs{d: d, m: make(map[string]*hub)} }

// hub is the shared reader of one run: every event of the run from seq 1 on,
// kept while any stream of it is open.
type hub struct {
	runID  string
	refs   int // under hubs.mu
	cancel context.CancelFunc

	mu      sync.RWMutex
	events  []hubEvent
	done    bool  // the log ended: a terminal event, or err
	err     error // why the reader stopped early
	changed chan struct{}
}

// join returns the hub of runID, starting its reader if none runs; leave
// it when done. The caller has checked that the run is its tenant's.
func (hs *hubs) join(runID string) *hub {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.m[runID]
	if h == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h = &hub{runID: runID, cancel: cancel, changed: make(chan struct{})}
		hs.m[runID] = h
		go hs.read(ctx, h)
	}
	h.refs++
	return h
}

func (hs *hubs) leave(h *hub) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h.refs--; h.refs == 0 {
		h.cancel()
		if hs.m[h.runID] == h {
			delete(hs.m, h.runID)
		}
	}
}

// read follows the log into h until its terminal event, an error, or the
// last stream leaving.
func (hs *hubs) read(ctx context.Context, h *hub) {
	var failed error
	for ev, err := range hs.d.Events(ctx, h.runID, 0) {
		if err != nil {
			failed = err
			break
		}
		var buf bytes.Buffer
		writeEvent(&buf, ev) // once for every stream
		h.mu.Lock()
		h.events = append(h.events, hubEvent{seq: ev.Seq, terminal: ev.Type.Terminal(), sse: buf.Bytes()})
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.done, h.err = true, failed
	close(h.changed)
	h.mu.Unlock()
	if failed != nil {
		// A later stream must not join a reader that gave up.
		hs.mu.Lock()
		if hs.m[h.runID] == h {
			delete(hs.m, h.runID)
		}
		hs.mu.Unlock()
	}
}

// hubEvent is an event as every stream sends it.
type hubEvent struct {
	seq      int64
	terminal bool
	sse      []byte // id, event and data lines
}

// after returns the events past seq, whether no more will come, why (when
// the reader failed), and a channel closed at the next change.
func (h *hub) after(seq int64) (events []hubEvent, done bool, err error, changed <-chan struct{}) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	i := sort.Search(len(h.events), func(i int) bool { return h.events[i].seq > seq })
	return h.events[i:len(h.events):len(h.events)], h.done, h.err, h.changed
}
