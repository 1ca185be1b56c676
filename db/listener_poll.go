package db

import (
	"context"
	"time"
)

// pollRuns stands in for LISTEN on a connection that cannot (a
// transaction pooler's, with no direct URL): it re-reads the watched runs
// every pollEvery, and at once when a subscriber needs a channel it has
// not looked at yet. The re-read goes through the pool.
func (l *listener) pollRuns(ctx context.Context) error {
	for {
		l.mu.Lock()
		clear(l.listening)
		for ch := range l.topicsOn {
			l.listening[ch] = true
		}
		l.mu.Unlock()
		conn, err := l.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		err = l.recheck(ctx, conn.Conn())
		conn.Release()
		if err != nil {
			return err
		}
		next := time.Now().Add(l.pollEvery)
		l.nextRecheckAt.Store(&next)
		waitCtx, cancel := context.WithDeadline(ctx, next)
		l.mu.Lock()
		if l.missingChannelLocked() {
			cancel()
		}
		l.interrupt = cancel
		l.mu.Unlock()
		<-waitCtx.Done()
		l.mu.Lock()
		l.interrupt = nil
		l.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
