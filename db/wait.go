package db

import (
	"context"
	"fmt"

	"github.com/kern-go/kern/run"
)

// WaitRun blocks until the run is terminal and returns it, or until ctx
// ends. It sleeps on the DB's shared LISTEN connection (no polling loop, no
// connection per waiter); a re-check at most a second apart covers a lost
// notification. An unknown id yields run.ErrNotFound at once.
func (d *DB) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	sub := d.SubscribeDone(runID)
	defer sub.Close()
	for {
		out, err := d.GetRun(ctx, runID)
		if err != nil {
			return nil, err
		}
		if out.Status.Terminal() {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kern: wait run %q: %w", runID, context.Cause(ctx))
		case <-sub.C():
		}
	}
}
