package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
)

// retentionEvery is how often, on average, a worker applies Retention.
const retentionEvery = time.Minute

// retentionPause is the pause between a pass's batches of 1,000 deletes:
// unpaced, a pass deleting a large backlog ran at Postgres's full speed
// and raised the latency of the runs flowing meanwhile by half (BENCHMARKS.md,
// retention figure); paced, it takes longer and leaves them alone.
const retentionPause = 25 * time.Millisecond

// retain deletes runs that finished more than olderThan ago (with their
// events, and cancel requests whose run never came), about every every,
// until ctx ends. Each wait is drawn from [every/2, 3·every/2): workers of a
// fleet started together do not all delete at the same moment, and one
// that restarts often still gets its turn. DeleteRuns works in bounded
// batches and lets concurrent callers share the work, so every worker may
// run this.
func retain(ctx context.Context, d *db.DB, olderThan, every time.Duration, logger *slog.Logger) {
	t := time.NewTimer(jitter(every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := d.Engine(engine.Key{}).Retain(ctx, olderThan, retentionPause)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.WarnContext(ctx, "kern: retention failed", slog.Any("error", err), slog.Int("deleted", n))
		case n > 0:
			logger.DebugContext(ctx, "kern: retention deleted finished runs", slog.Int("deleted", n),
				slog.Duration("older_than", olderThan))
		}
		t.Reset(jitter(every))
	}
}

// jitter is a wait of every ± 50%, uniformly.
func jitter(every time.Duration) time.Duration {
	return every/2 + rand.N(max(every, 1))
}
