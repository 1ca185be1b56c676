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
type testExec struct {
	s engine.Store
	d *db.DB
}

func ex(d *db.DB) testExec { return testExec{d.Engine(engine.Key{}), d} }

func (e testExec) StartRun(ctx context.Context, runID string, jobID *int64) (*run.Output, error) {
	c, err := e.s.StartRun(ctx, runID, jobID)
	if err != nil {
		return nil, err
	}
	return c.Run, nil
}

// AppendContent appends after the run's last event, whatever it is: the
// tests that use it write one chunk at a time.
func (e testExec) AppendContent(ctx context.Context, runID string, execution int, delta string) error {
	seq, err := e.lastSeq(ctx, runID)
	if err != nil {
		return err
	}
	return e.s.AppendContent(ctx, engine.Fence{RunID: runID, Execution: execution}, seq+1, delta)
}

func (e testExec) lastSeq(ctx context.Context, runID string) (int64, error) {
	var last int64
	err := e.d.Pool().QueryRow(ctx, `SELECT event_seq FROM kern_run WHERE id = $1`, runID).Scan(&last)
	return last, err
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
