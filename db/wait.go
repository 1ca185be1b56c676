package db

import (
	"context"
	"fmt"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// WaitRun blocks until the run is terminal or waiting (run.StatusWaiting:
// it needs an answer to go on, see ApproveToolCall) and returns it, or
// until ctx ends. It sleeps on the DB's shared LISTEN connection (no polling loop, no
// connection per waiter); a re-check at most a second apart covers a lost
// notification. An unknown id yields run.ErrNotFound at once. While
// Postgres is briefly away (a restart, a dropped connection) it keeps
// waiting, until ctx ends.
func (d *DB) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	// A run that has finished is answered by GetRun's one statement; one
	// still live is waited for by its key, which GetRun's answer names.
	for failures := 0; ; failures++ {
		out, err := d.GetRun(ctx, runID)
		switch {
		case err == nil && (out.Status.Terminal() || out.Status == run.StatusWaiting):
			return out, nil
		case err == nil:
			return d.waitRun(ctx, engine.RunKey(out.TenantID, out.RunID))
		case !transient(err) || !pause(ctx, failures):
			return nil, err // Postgres briefly away is ridden out, as waitRun does
		}
	}
}

// waitRun is WaitRun for the run of key.
func (d *DB) waitRun(ctx context.Context, key string) (*run.Output, error) {
	sub := d.subscribeDone(key)
	defer sub.Close()
	for failures := 0; ; {
		out, err := d.getByKey(ctx, key)
		if transient(err) && pause(ctx, failures) {
			failures++
			continue
		}
		if err != nil {
			return nil, err
		}
		failures = 0
		if out.Status.Terminal() || out.Status == run.StatusWaiting {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kern: wait run %q: %w", idOf(key), context.Cause(ctx))
		case <-sub.C():
		}
	}
}
