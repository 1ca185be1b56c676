package db_test

import (
	"context"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// testExec is the worker's side of a DB (db.DB.Engine) with the
// (run id, execution) arguments the tests spell out.
type testExec struct{ s engine.Store }

func ex(d *db.DB) testExec { return testExec{d.Engine(engine.Key{})} }

func (e testExec) StartRun(ctx context.Context, runID string, jobID *int64) (*run.Output, error) {
	c, err := e.s.StartRun(ctx, runID, jobID)
	if err != nil {
		return nil, err
	}
	return c.Run, nil
}

func (e testExec) AppendContent(ctx context.Context, runID string, execution int, delta string) error {
	return e.s.AppendContent(ctx, engine.Fence{RunID: runID, Execution: execution}, delta)
}

func (e testExec) FinishRun(ctx context.Context, runID string, execution int, f engine.Finish) error {
	return e.s.FinishRun(ctx, engine.Fence{RunID: runID, Execution: execution}, f)
}

func (e testExec) Heartbeat(ctx context.Context, runID string, execution int) error {
	return e.s.Heartbeat(ctx, engine.Fence{RunID: runID, Execution: execution})
}

func (e testExec) RetryRun(ctx context.Context, runID string, execution int, msg string, delay time.Duration) error {
	return e.s.RetryRun(ctx, engine.Fence{RunID: runID, Execution: execution}, msg, delay)
}

func (e testExec) ReleaseRun(ctx context.Context, runID string, execution int) error {
	return e.s.ReleaseRun(ctx, engine.Fence{RunID: runID, Execution: execution})
}

func (e testExec) RescueStale(ctx context.Context, staleAfter time.Duration, maxAttempts int) (engine.Rescued, error) {
	return e.s.RescueStale(ctx, staleAfter, maxAttempts)
}

func (e testExec) SubscribeDone(runID string) engine.Subscription { return e.s.SubscribeDone(runID) }
func (e testExec) SubscribeCancel(runID string) engine.Subscription {
	return e.s.SubscribeCancel(runID)
}
