package db_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func TestListRunsPagesNewestFirst(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for i := range 7 {
		session := "even"
		if i%2 == 1 {
			session = "odd"
		}
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: fmt.Sprintf("l%d", i), SessionID: session, AgentName: "a", Input: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, err := d.ListRuns(ctx, run.ListParams{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Runs {
			ids = append(ids, r.RunID)
		}
		if page.NextCursor == "" {
			if pages != 2 {
				t.Fatalf("%d pages of 3 for 7 runs", pages+1)
			}
			break
		}
		cursor = page.NextCursor
	}
	if fmt.Sprint(ids) != "[l6 l5 l4 l3 l2 l1 l0]" {
		t.Fatalf("pages gave %v, want newest first, each once", ids)
	}
	odd, err := d.ListRuns(ctx, run.ListParams{SessionID: "odd", Statuses: []run.Status{run.StatusPending}})
	if err != nil || len(odd.Runs) != 3 || odd.NextCursor != "" {
		t.Fatalf("filtered: %+v, %v", odd, err)
	}
	for _, bad := range []run.ListParams{{Limit: -1}, {Limit: 5000}, {Cursor: "%%%"}, {Statuses: []run.Status{"bogus"}}} {
		if _, err := d.ListRuns(ctx, bad); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("ListRuns(%+v) err = %v, want run.ErrInvalidArgument", bad, err)
		}
	}
}

func TestDeleteRunsOnlyFinished(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	for _, id := range []string{"done", "live", "gone"} {
		submit(t, d, id)
	}
	if _, err := ex(d).StartRun(ctx, "done", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "done", 1, engine.Finish{Status: run.StatusCompleted, Tail: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CancelRun(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteRuns(ctx, run.DeleteParams{Statuses: []run.Status{run.StatusPending}}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("deleting pending runs: %v, want run.ErrInvalidArgument", err)
	}
	if n, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: time.Hour}); err != nil || n != 0 {
		t.Fatalf("nothing is an hour old: deleted %d, %v", n, err)
	}
	n, err := d.DeleteRuns(ctx, run.DeleteParams{})
	if err != nil || n != 2 {
		t.Fatalf("deleted %d, %v; want the completed and the cancelled run", n, err)
	}
	if _, err := d.GetRun(ctx, "live"); err != nil {
		t.Fatalf("the pending run was deleted: %v", err)
	}
	var leftovers int
	if err := d.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM kern_run_event WHERE run_id IN ('done', 'gone'))
		+ (SELECT count(*) FROM kern_run_cancel WHERE run_id = 'gone')`).Scan(&leftovers); err != nil || leftovers != 0 {
		t.Fatalf("%d events or cancel requests of deleted runs left (%v)", leftovers, err)
	}
}
