package agent_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
)

// A background run: Run returns at once with the run pending; a worker —
// usually another process — executes it; WaitRun sleeps until it is done.
func Example_background() {
	ctx := context.Background()
	d, closeDB := kerntest.ExampleDB() // a migrated *db.DB; use db.Open + Migrate
	defer closeDB()
	_, model, stopModel := kerntest.ExampleModel() // agent.OpenAIChat{ID: "gpt-5-mini"} for real
	defer stopModel()

	assistant := &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: model, DB: d}

	worker, err := agent.NewWorker(d, agent.WorkerConfig{MaxConcurrentRuns: 5}, assistant)
	if err != nil {
		panic(err)
	}
	if err := worker.Start(ctx); err != nil {
		panic(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = worker.Stop(stopCtx)
	}()

	out, err := assistant.Run(ctx, "What is the capital of France?", agent.Background(true))
	if err != nil {
		panic(err)
	}
	fmt.Println("submitted:", out.Status)

	out, err = assistant.WaitRun(ctx, out.RunID)
	if err != nil {
		panic(err)
	}
	fmt.Println(out.Status+":", out.Content)

	// Output:
	// submitted: pending
	// completed: The capital of France is Paris.
}

// Cancel before start: a cancel request for an id that has no run yet is
// kept; when a run with that id is submitted, the worker ends it cancelled
// without calling the model.
func Example_cancelBeforeStart() {
	ctx := context.Background()
	d, closeDB := kerntest.ExampleDB()
	defer closeDB()
	fake, model, stopModel := kerntest.ExampleModel()
	defer stopModel()
	assistant := &agent.Agent{Name: "assistant", Model: model, DB: d}
	worker, err := agent.NewWorker(d, agent.WorkerConfig{}, assistant)
	if err != nil {
		panic(err)
	}
	if err := worker.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = worker.Stop(ctx) }()

	ok, err := assistant.CancelRun(ctx, "run-42")
	if err != nil {
		panic(err)
	}
	fmt.Println("cancel before start:", ok)

	if _, err := assistant.Run(ctx, "Hello?", agent.Background(true), agent.WithRunID("run-42")); err != nil {
		panic(err)
	}
	out, err := assistant.WaitRun(ctx, "run-42")
	if err != nil {
		panic(err)
	}
	fmt.Println("final status:", out.Status)
	fmt.Println("model calls:", fake.Count())

	// Output:
	// cancel before start: true
	// final status: cancelled
	// model calls: 0
}
