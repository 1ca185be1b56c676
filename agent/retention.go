package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// retentionEvery is how often a worker applies Retention.
const retentionEvery = time.Minute

// retain deletes runs that finished more than olderThan ago, every every,
// until ctx ends. (Placeholder; replaced by the retention change.)
func retain(ctx context.Context, d *db.DB, olderThan, every time.Duration, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: olderThan}); err != nil && ctx.Err() == nil {
			logger.WarnContext(ctx, "kern: retention failed", slog.Any("error", err))
		}
	}
}
