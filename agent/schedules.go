package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

// scheduleBatch bounds the schedules one firing pass fires; a pass that
// fires that many looks again at once.
const scheduleBatch = 100

// schedulePoll is how often, on average, a worker looks at its agents'
// schedules when none is due sooner: a schedule put meanwhile (or one due
// within a second of its put) is seen within about that. Otherwise the
// worker wakes at the earliest due time itself.
const schedulePoll = time.Second

// fireSchedules fires the due schedules of the worker's agents
// (engine.Store.FireSchedules), until ctx ends. Every worker serving an
// agent does this; the row locks of the pass make each due time fire
// once, whichever worker gets there first.
func (w *Worker) fireSchedules(ctx context.Context) {
	agents := w.agentNames()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := w.store.FireSchedules(ctx, agents, scheduleBatch)
		if err != nil && ctx.Err() == nil {
			w.cfg.Logger.WarnContext(ctx, "kern: firing schedules failed", slog.Any("error", err))
		}
		for _, id := range res.Runs {
			w.cfg.Logger.DebugContext(ctx, "kern: a schedule fired a run", slog.String("run_id", id))
		}
		t.Reset(scheduleWait(res))
	}
}

// scheduleWait is how long to wait after a pass: until the earliest due
// time, plus a few milliseconds of jitter so the workers of a fleet do not
// all ask at the same instant (one would win and the rest find nothing),
// but never longer than about schedulePoll, drawn from [0.9, 1.1) of it.
func scheduleWait(res engine.FiredSchedules) time.Duration {
	wait := schedulePoll*9/10 + rand.N(schedulePoll/5)
	switch {
	case len(res.Runs) >= scheduleBatch:
		return 0 // more may be due
	case !res.HasNext:
		return wait
	case res.Next <= 0:
		// Due, but another worker's pass holds it (or it failed): that
		// pass moves it on in a moment.
		return 20*time.Millisecond + rand.N(10*time.Millisecond)
	}
	return min(wait, res.Next+rand.N(5*time.Millisecond))
}
