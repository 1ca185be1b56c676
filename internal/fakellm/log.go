package fakellm

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultLogLimit is how many requests a new Server remembers. Benchmarks send
// far more; only the most recent ones are kept so memory stays flat.
const DefaultLogLimit = 10_000

var (
	// ErrEvicted is returned when a waited-for request has already dropped
	// out of the bounded request log.
	ErrEvicted = errors.New("fakellm: request no longer in the log")
	// ErrFinished is returned by WaitClientGone when the request finished
	// without its client going away, so waiting longer would be pointless.
	ErrFinished = errors.New("fakellm: request finished without client disconnect")
)

// The log is a ring of pointers to Requests, guarded by Server.mu. Handlers
// keep their *Request and update it (under mu) when they finish; an entry
// that was evicted meanwhile is simply updated unseen.

// SetLogLimit sets how many of the most recent requests are kept (minimum 1).
func (s *Server) SetLogLimit(n int) {
	n = max(n, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := s.orderedLocked()
	if len(entries) > n {
		entries = entries[len(entries)-n:]
	}
	s.ring = append(make([]*Request, 0, min(n, len(entries)+16)), entries...)
	s.start = 0
	s.limit = n
}

// Count returns the total number of chat requests received, including those
// no longer in the log.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Requests returns a copy of the request log, oldest first, including
// requests that are still in flight.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.ring))
	for _, p := range s.orderedLocked() {
		out = append(out, *p)
	}
	return out
}

// Request returns the logged request with the given Seq.
func (s *Server) Request(seq int) (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.bySeqLocked(seq); p != nil {
		return *p, true
	}
	return Request{}, false
}

// WaitRequests blocks until at least n requests have arrived or ctx ends.
func (s *Server) WaitRequests(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got := s.count
		ch := s.changedLocked()
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fakellm: waiting for %d requests (have %d): %w", n, got, ctx.Err())
		}
	}
}

// WaitClientGone blocks until the request with the given Seq (or, for seq 0,
// any logged request) has seen its client disconnect, or ctx ends. It fails
// fast with ErrFinished if the request completed normally and with
// ErrEvicted if it fell out of the log. On ctx expiry it returns the
// request's current state along with the error.
func (s *Server) WaitClientGone(ctx context.Context, seq int) (Request, error) {
	for {
		s.mu.Lock()
		req, done, err := s.goneLocked(seq)
		ch := s.changedLocked()
		s.mu.Unlock()
		if done {
			return req, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return req, fmt.Errorf("fakellm: waiting for client of request %d to go away: %w", seq, ctx.Err())
		}
	}
}

// goneLocked reports whether WaitClientGone(seq) can return, and with what.
func (s *Server) goneLocked(seq int) (Request, bool, error) {
	if seq <= 0 {
		for _, p := range s.orderedLocked() {
			if p.ClientGone {
				return *p, true, nil
			}
		}
		return Request{}, false, nil
	}
	if seq > s.count {
		return Request{}, false, nil // not arrived yet
	}
	p := s.bySeqLocked(seq)
	switch {
	case p == nil:
		return Request{}, true, fmt.Errorf("request %d: %w", seq, ErrEvicted)
	case p.ClientGone:
		return *p, true, nil
	case !p.DoneAt.IsZero():
		return *p, true, fmt.Errorf("request %d: %w", seq, ErrFinished)
	}
	return *p, false, nil
}

// add assigns the next Seq to req and appends it to the log.
func (s *Server) add(req Request) *Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	req.Seq = s.count
	p := &req
	if len(s.ring) < s.limit {
		s.ring = append(s.ring, p)
	} else {
		s.ring[s.start] = p
		s.start = (s.start + 1) % len(s.ring)
	}
	s.notifyLocked()
	return p
}

// outcome is how a handler's exchange with its client ended.
type outcome struct {
	status    int
	completed bool
	cut       bool
	goneAt    time.Time // zero unless the client went away
}

func (s *Server) finish(p *Request, o outcome) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p.DoneAt = now
	p.Status = o.status
	p.Completed = o.completed
	p.Cut = o.cut
	if !o.goneAt.IsZero() {
		p.ClientGone = true
		p.ClientGoneAt = o.goneAt
	}
	s.notifyLocked()
}

func (s *Server) orderedLocked() []*Request {
	out := make([]*Request, 0, len(s.ring))
	out = append(out, s.ring[s.start:]...)
	return append(out, s.ring[:s.start]...)
}

func (s *Server) bySeqLocked(seq int) *Request {
	oldest := s.count - len(s.ring) + 1
	if seq < oldest || seq > s.count {
		return nil
	}
	return s.ring[(s.start+seq-oldest)%len(s.ring)]
}

// changedLocked returns a channel closed at the next log change. It is
// created lazily so that a benchmark nobody waits on allocates nothing.
func (s *Server) changedLocked() <-chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *Server) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}
