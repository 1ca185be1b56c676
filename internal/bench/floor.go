package bench

import (
	"context"
	"fmt"
	"log/slog"
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

// floorTableDDL is the floor's application table.
const floorTableDDL = `CREATE TABLE bench_floor (id bigserial PRIMARY KEY, status text NOT NULL,
	input text NOT NULL, content text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now())`

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
	return floorTimed(ctx, env, cfg, nil)
}

// floorTimed is floor that also appends each submit's latency to submits
// (nil: not kept).
func floorTimed(ctx context.Context, env Env, cfg Config, submits *[]time.Duration) (float64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	pool := d.Pool()
	if _, err := pool.Exec(ctx, floorTableDDL); err != nil {
		return 0, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &floorWorker{pool: pool})
	client, stop, err := startRiver(ctx, pool, cfg, cfg.Logger, "floor", cfg.Concurrency, workers)
	if err != nil {
		return 0, err
	}
	defer stop()

	return driveTimed(ctx, cfg, func() error {
		return floorSubmit(ctx, pool, client)
	}, submits, func() (int, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM bench_floor WHERE status = 'completed'`).Scan(&n)
		return n, err
	})
}

// startRiver starts a River client working queue with maxWorkers, at the
// benchmark's fetch settings; stop stops it.
func startRiver(ctx context.Context, pool *pgxpool.Pool, cfg Config, logger *slog.Logger, queue string, maxWorkers int,
	workers *river.Workers) (client *river.Client[pgx.Tx], stop func(), err error) {
	client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:            logger,
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: maxWorkers}},
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := client.Start(ctx); err != nil {
		return nil, nil, err
	}
	return client, func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}, nil
}

// floorResults formats kern's throughput against the floor's.
func floorResults(kern, floorRate float64, rounds []float64) []Result {
	note := "River alone: row + job in one tx, worker makes two updates"
	if len(rounds) > 1 {
		note = "rounds " + roundsList(rounds) + "; " + note
	}
	return []Result{
		{"run-shaped River floor runs/s", fmt.Sprintf("%.0f", floorRate), note},
		{"kern / floor", fmt.Sprintf("%.2f", kern/floorRate), "target ≥ 1.0 on the stock cluster (#14)"},
	}
}
