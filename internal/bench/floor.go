package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// The run-shaped River floor: what River alone does for a run-shaped job —
// one application row inserted with the job in one transaction, and a
// worker that makes two updates of that row (running, then done with the
// answer). kern's end-to-end figure is measured against it, same machine,
// same process run, same River settings.

type floorArgs struct {
	RowID int64 `json:"row_id"`
}

func (floorArgs) Kind() string { return "kern_bench_floor" }

type floorWorker struct {
	river.WorkerDefaults[floorArgs]
	pool *pgxpool.Pool
}

func (w *floorWorker) Work(ctx context.Context, job *river.Job[floorArgs]) error {
	if _, err := w.pool.Exec(ctx, `UPDATE bench_floor SET status = 'running' WHERE id = $1`, job.Args.RowID); err != nil {
		return err
	}
	_, err := w.pool.Exec(ctx, `UPDATE bench_floor SET status = 'completed', content = $2 WHERE id = $1`,
		job.Args.RowID, "The capital of France is Paris.")
	return err
}

// floor measures the River floor's runs/s with the shape of endToEnd.
func floor(ctx context.Context, env Env, cfg Config) (float64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	pool := d.Pool()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_floor (id bigserial PRIMARY KEY, status text NOT NULL,
		input text NOT NULL, content text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &floorWorker{pool: pool})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:            cfg.Logger,
		Queues:            map[string]river.QueueConfig{"floor": {MaxWorkers: cfg.Concurrency}},
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
	})
	if err != nil {
		return 0, err
	}
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()

	return drive(ctx, cfg, func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO bench_floor (status, input) VALUES ('pending', $1) RETURNING id`,
				"What is the capital of France?").Scan(&id); err != nil {
				return err
			}
			_, err := client.InsertTx(ctx, tx, floorArgs{RowID: id}, &river.InsertOpts{Queue: "floor"})
			return err
		})
	}, func() (int, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM bench_floor WHERE status = 'completed'`).Scan(&n)
		return n, err
	})
}

// floorResults formats kern's throughput against the floor's.
func floorResults(kern, floorRate float64) []Result {
	return []Result{
		{"run-shaped River floor runs/s", fmt.Sprintf("%.0f", floorRate), "River alone: row + job in one tx, worker makes two updates"},
		{"kern / floor", fmt.Sprintf("%.2f", kern/floorRate), "target ≥ 0.90"},
	}
}
