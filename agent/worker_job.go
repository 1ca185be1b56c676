package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
)

// runWorker is the River worker of kern's job kind.
type runWorker struct {
	river.WorkerDefaults[engine.RunJobArgs]
	w *Worker
}

// Timeout disables River's job timeout; see NewWorker.
func (*runWorker) Timeout(*river.Job[engine.RunJobArgs]) time.Duration { return -1 }

// notServedDelay is how long a job this worker cannot execute is put back
// for: only a job inserted by hand onto one of its queues, or an agent whose
// queue name collides with one it serves, gets here.
const notServedDelay = 5 * time.Second

// busyDelay is how long a run waits when all of a multi-agent worker's
// slots are taken: about a fetch cooldown, jittered so that the runs put
// back together spread out, and short, since another worker may be free.
func busyDelay() time.Duration { return 50*time.Millisecond + rand.N(100*time.Millisecond) }

// keyBusyDelay is how long a run its concurrency key holds back is put
// back for. The run whose turn comes when a slot frees is woken then (db's
// WakeKey), so this is only the fallback for a slot freed without a wake (a
// worker that died first): long enough that a key's backlog does not keep
// the workers claiming and refusing (with 100–300 ms, 200 held-back runs
// made a thousand refused claims a second, and slowed the handoffs they
// raced), and jittered so that the backlog does not come back all at once.
func keyBusyDelay() time.Duration { return time.Second + rand.N(time.Second) }

func (rw *runWorker) Work(ctx context.Context, job *river.Job[engine.RunJobArgs]) error {
	w := rw.w
	a := w.agents[job.Args.AgentName]
	if a == nil {
		// Never fail a run this worker cannot execute: it stays pending
		// for a worker that serves its agent. A snooze uses no attempt.
		return river.JobSnooze(notServedDelay)
	}
	if w.slots != nil {
		// River bounds each queue on its own; MaxConcurrentRuns is the
		// worker's total. A full worker puts the job back (pending, no
		// attempt used) instead of holding it, so an idle worker can take it.
		select {
		case w.slots <- struct{}{}:
			defer func() { <-w.slots }()
		default:
			return river.JobSnooze(busyDelay())
		}
	}
	ctx, rt := w.tel.startRun(ctx, job)
	err := w.exec.execute(ctx, a, w.models[a.Name], job.Args.RunID, &job.ID)
	rt.end(ctx, err)
	w.hooks.poke() // the run may have ended: its OnComplete goes out now, not at the next tick
	if w.exec.maxRunsPerKey > 0 && !errors.Is(err, errKeyBusy) {
		// The run may have left its key's slot: the key's next runs are
		// fetched now, not at the next poll (db's WakeKey).
		if werr := w.exec.store.WakeKey(ctx, job.Args.RunID, w.exec.maxRunsPerKey); werr != nil && ctx.Err() == nil {
			w.cfg.Logger.WarnContext(ctx, "kern: waking the next runs of a concurrency key failed", slog.Any("error", werr))
		}
	}
	var retry *retryLater
	switch {
	case errors.As(err, &retry):
		// kern counts the run's attempts itself; a snooze costs no River attempt.
		return river.JobSnooze(retry.delay)
	case errors.Is(err, errHandedBack):
		return river.JobSnooze(0)
	case errors.Is(err, errKeyBusy):
		// Over its key's MaxRunsPerKey, or an older run of the key comes
		// first: pending still, and a snooze uses no attempt.
		return river.JobSnooze(keyBusyDelay())
	}
	return err
}
