// Transactional submit: create an order and start its agent run
// atomically. The application inserts the order row and submits a
// background run with agent.WithTx(tx) in one transaction of its own pgx
// pool: the run's row and its job commit or roll back with the order, and
// no worker sees the run before the commit.
//
//  1. committed: the order exists, and its run completes;
//  2. rolled back (say the payment failed): no order, no run, and the model
//     was never called for it.
//
// It runs offline by default (fake model, throwaway Postgres); see
// cookbook/background_execution for the environment variables.
//
//	go run ./cookbook/transactional
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/run"
)

func main() {
	if err := runAll(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()

	// The application's own pool, on the database kern uses: WithTx needs
	// the same Postgres database, not the same pool.
	pool, err := pgxpool.New(ctx, env.DB.Pool().Config().ConnString())
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (
		id         bigserial PRIMARY KEY,
		item       text NOT NULL,
		run_id     text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}

	assistant := &agent.Agent{Name: "orders", Instructions: "Confirm orders in one line.", Model: env.Model, DB: env.DB}
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, assistant)
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(stopCtx)
	}()

	fmt.Println("=== 1. Order committed ===")
	orderID, runID, err := placeOrder(ctx, pool, assistant, "2 x espresso beans", true)
	if err != nil {
		return err
	}
	fmt.Printf("order %d committed with run %s\n", orderID, runID)
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := assistant.WaitRun(waitCtx, runID)
	if err != nil {
		return err
	}
	if out.Status != run.StatusCompleted {
		return fmt.Errorf("%w: the committed order's run ended %s: %s", demo.ErrScenario, out.Status, out.Error)
	}
	fmt.Printf("run %s: %s\nanswer: %s\n\n", runID, out.Status, out.Content)

	fmt.Println("=== 2. Order rolled back ===")
	calls := 0
	if env.Fake != nil {
		calls = env.Fake.Count()
	}
	orderID, runID, err = placeOrder(ctx, pool, assistant, "1 x grinder", false)
	if err != nil {
		return err
	}
	fmt.Printf("order %d and run %s submitted, then rolled back\n", orderID, runID)
	// Give a worker every chance to pick up a run, were there one: well
	// past the worker's 1s fetch poll.
	time.Sleep(1500 * time.Millisecond)
	var orders int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE id = $1`, orderID).Scan(&orders); err != nil {
		return err
	}
	_, err = assistant.GetRunOutput(ctx, runID)
	fmt.Printf("order %d rows: %d; GetRunOutput(%s): %v\n", orderID, orders, runID, err)
	if orders != 0 || !errors.Is(err, run.ErrNotFound) {
		return fmt.Errorf("%w: a rolled-back order left %d rows and its run %v", demo.ErrScenario, orders, err)
	}
	if env.Fake != nil {
		after := env.Fake.Count()
		fmt.Printf("model calls: %d before the rolled-back order, %d after\n", calls, after)
		if after != calls {
			return fmt.Errorf("%w: the model was called for a rolled-back order", demo.ErrScenario)
		}
		fmt.Printf("\nThe fake model served %d requests.\n", after)
	}
	return nil
}

// placeOrder inserts an order and submits its run in one transaction of
// pool, then commits it, or rolls it back as a failed payment would.
func placeOrder(ctx context.Context, pool *pgxpool.Pool, a *agent.Agent, item string, commit bool) (orderID int64, runID string, err error) {
	runID = uuid.NewString()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO orders (item, run_id) VALUES ($1, $2) RETURNING id`, item, runID).Scan(&orderID); err != nil {
			return err
		}
		prompt := fmt.Sprintf("Order %d: confirm %s.", orderID, item)
		if _, err := a.Run(ctx, prompt, agent.Background(true), agent.WithTx(tx), agent.WithRunID(runID)); err != nil {
			return err
		}
		// Until the commit, nobody outside tx sees the run.
		if _, err := a.GetRunOutput(ctx, runID); !errors.Is(err, run.ErrNotFound) {
			return fmt.Errorf("%w: the run is visible before the commit (%v)", demo.ErrScenario, err)
		}
		if !commit {
			return errPaymentFailed
		}
		return nil
	})
	if !commit && errors.Is(err, errPaymentFailed) {
		err = nil
	}
	return orderID, runID, err
}

var errPaymentFailed = errors.New("payment failed")
