package db

import (
	"slices"
	"strings"
	"time"
)

// WakeHooks gives the external tests (package db_test) of how waiters are
// woken a view into the DB's listener, and its test hooks.
type WakeHooks struct{ l *listener }

// WakeHooksOf returns the listener hooks of d.
func WakeHooksOf(d *DB) WakeHooks { return WakeHooks{d.listener} }

// SetRecheckEvery sets the interval of the periodic re-check, and of the
// one right after the listener registers for event notifications. It must
// be called before anything subscribes (the listener reads it unlocked).
func (h WakeHooks) SetRecheckEvery(every time.Duration) {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.l.running {
		panic("db: SetRecheckEvery after the listener started")
	}
	h.l.recheckEvery = every
	h.l.registeredRecheckAfter = every
}

// DropNotifications makes the listener lose (drop) every notification it
// receives from now on, or stop doing so.
func (h WakeHooks) DropNotifications(drop bool) { h.l.dropNotifications.Store(drop) }

// Dropped is how many notifications the listener has dropped.
func (h WakeHooks) Dropped() int64 { return h.l.dropped.Load() }

// NextRecheck is when the listener's next periodic re-check is due; zero
// before its first re-check.
func (h WakeHooks) NextRecheck() time.Time {
	if at := h.l.nextRecheckAt.Load(); at != nil {
		return *at
	}
	return time.Time{}
}

// Listening lists, sorted and comma-separated, the channels the listener's
// connection LISTENs on.
func (h WakeHooks) Listening() string {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	var chs []string
	for ch, on := range h.l.listening {
		if on {
			chs = append(chs, ch)
		}
	}
	slices.Sort(chs)
	return strings.Join(chs, ",")
}

// Waiting says the listener is blocked waiting for a notification: it has
// LISTENed on every channel its subscribers need and done the re-check
// that follows, and will do nothing else until a notification arrives, a
// subscription needs a new channel, or the next periodic re-check is due.
func (h WakeHooks) Waiting() bool {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	return h.l.interrupt != nil && !h.l.missingChannelLocked()
}

// DoneSubscriptions counts the subscriptions for a run's terminal status
// (WaitRun's).
func (h WakeHooks) DoneSubscriptions() int {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	n := 0
	for t, set := range h.l.subs {
		if t.channel == channelRunDone {
			n += len(set)
		}
	}
	return n
}

// SleepingWaiters counts the subscriptions for a run's terminal status whose
// receiver has gone to sleep on them: it has read the run, found it not
// terminal and asked for the channel to wait on.
func (h WakeHooks) SleepingWaiters() int {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	n := 0
	for t, set := range h.l.subs {
		if t.channel != channelRunDone {
			continue
		}
		for s := range set {
			if s.sleeps.Load() > 0 {
				n++
			}
		}
	}
	return n
}
