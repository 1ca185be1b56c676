package db_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// CancelRun answers whether the run will end cancelled: true for a pending
// run (cancelled at once) and for an id with no run yet; false for a run
// that already finished, which it leaves alone.
func ExampleDB_CancelRun() {
	ctx := context.Background()
	d, closeDB := kerntest.ExampleDB() // db.Open(ctx, url) + d.Migrate(ctx)
	defer closeDB()

	_, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "r1", AgentName: "assistant", Input: "Hi"})
	if err != nil {
		panic(err)
	}
	ok, _ := d.CancelRun(ctx, "r1")
	out, _ := d.GetRun(ctx, "r1")
	fmt.Println("pending run:", ok, out.Status)

	ok, _ = d.CancelRun(ctx, "not-submitted-yet")
	_, err = d.GetRun(ctx, "not-submitted-yet")
	fmt.Println("future run:", ok, errors.Is(err, run.ErrNotFound))

	// Output:
	// pending run: true cancelled
	// future run: true true
}
