package db

import (
	"context"
	"fmt"
	"os"
	"time"
)

// RegisterWorker implements engine.Store: worker id serves agents until ttl
// from now. Reads of a pending background run whose agent no registered
// worker serves say so in Output.Error (runReadColumns).
func (d engineDB) RegisterWorker(ctx context.Context, id string, agents []string, ttl time.Duration) error {
	host, _ := os.Hostname() // informational only
	if _, err := d.pool.Exec(ctx, sqlRegisterWorker, id, agents, host, os.Getpid(), ttl.Seconds()); err != nil {
		return fmt.Errorf("register worker: %w", err)
	}
	return nil
}

// UnregisterWorker implements engine.Store.
func (d engineDB) UnregisterWorker(ctx context.Context, id string) error {
	if _, err := d.pool.Exec(ctx, sqlUnregisterWorker, id); err != nil {
		return fmt.Errorf("unregister worker: %w", err)
	}
	return nil
}
