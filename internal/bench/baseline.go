package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// River's own figures for what kern's latency figures measure, taken in the
// same process run: a floor submit (the application row and its job in one
// transaction) and River's JobCancel of a running job until the job's
// context is cancelled — River's way of stopping work in flight, which
// CancelRun → model stream closed compares with.

// floorSubmitLatency times cfg.Samples sequential floor submits.
func floorSubmitLatency(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	pool := d.Pool()
	if _, err := pool.Exec(ctx, floorTableDDL); err != nil {
		return nil, err
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	lat := make([]time.Duration, 0, cfg.Samples)
	for range cfg.Samples {
		start := time.Now()
		if err := floorSubmit(ctx, pool, client); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return []Result{
		{"River floor submit latency p50", ms(pct(lat, 50)), "row + job in one transaction, the same way"},
		{"River floor submit latency p99", ms(pct(lat, 99)), ""},
	}, nil
}

type blockArgs struct{}

func (blockArgs) Kind() string { return "kern_bench_block" }

// blockWorker works until its context is cancelled and says when that was.
type blockWorker struct {
	river.WorkerDefaults[blockArgs]
	started   chan struct{}
	cancelled chan time.Time
}

func (w *blockWorker) Work(ctx context.Context, _ *river.Job[blockArgs]) error {
	w.started <- struct{}{}
	<-ctx.Done()
	w.cancelled <- time.Now()
	return ctx.Err()
}

// riverCancelLatency times River's JobCancel of a running job until the
// job's context is cancelled.
func riverCancelLatency(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	w := &blockWorker{started: make(chan struct{}, 1), cancelled: make(chan time.Time, 1)}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	// River warns of every remotely cancelled job: that is the point here.
	client, stop, err := startRiver(ctx, d.Pool(), cfg, slog.New(slog.DiscardHandler), river.QueueDefault, 10, workers)
	if err != nil {
		return nil, err
	}
	defer stop()

	lat := make([]time.Duration, 0, cfg.Samples)
	for range cfg.Samples {
		res, err := client.Insert(ctx, blockArgs{}, nil)
		if err != nil {
			return nil, err
		}
		if err := receive(ctx, w.started); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, err := client.JobCancel(ctx, res.Job.ID); err != nil {
			return nil, err
		}
		var at time.Time
		select {
		case at = <-w.cancelled:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("river: job %d not cancelled in 30s", res.Job.ID)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		lat = append(lat, at.Sub(start))
	}
	return []Result{
		{"River JobCancel → job context cancelled p50", ms(pct(lat, 50)), "River's stop of a running job, for comparison"},
		{"River JobCancel → job context cancelled p99", ms(pct(lat, 99)), ""},
	}, nil
}

func receive(ctx context.Context, c <-chan struct{}) error {
	select {
	case <-c:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("river: job not started in 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// floorSubmit is one floor submit: the row and its job in one transaction.
func floorSubmit(ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, client *river.Client[pgx.Tx]) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO bench_floor (status, input) VALUES ('pending', $1) RETURNING id`,
			"What is the capital of France?").Scan(&id); err != nil {
			return err
		}
		_, err := client.InsertTx(ctx, tx, floorArgs{RowID: id}, &river.InsertOpts{Queue: "floor"})
		return err
	})
}
