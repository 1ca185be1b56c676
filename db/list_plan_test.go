package db_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// ListRuns reads about a page of rows per page whatever the table holds:
// for an agent with no runs, for one agent deep into its runs, and for all
// runs deep into them — also when Postgres plans the prepared statement
// generically (which it may do after five executions, and which a
// force_generic_plan setting does at once), where a condition on a
// parameter cannot be simplified away before planning.
func TestListRunsReadsAPagePerPage(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)
	const runs = 20000
	populate(t, ctx, url, func(d *db.DB) {
		if _, err := d.Pool().Exec(ctx, `
			INSERT INTO kern_run (id, agent_name, input, created_at, parent_run_id)
			SELECT 'r-' || i, CASE WHEN i % 100 = 0 THEN 'rare' ELSE 'common' END, 'x', now() - make_interval(secs => 20000 - i),
				CASE WHEN i % 100 = 50 THEN 'r-1' END
			FROM generate_series(1, 20000) i;
			ANALYZE kern_run`); err != nil {
			t.Fatal(err)
		}
	})
	lister := kerntest.Open(t, kerntest.WithPoolSize(url, 1))
	for _, mode := range []string{"auto", "force_generic_plan"} {
		if _, err := lister.Pool().Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			params run.ListParams
			pages  int
			want   int // runs on each page
		}{
			{"agent with no runs", run.ListParams{AgentName: "nobody"}, 1, 0},
			{"one agent, deep", run.ListParams{AgentName: "rare", Limit: 20}, 8, 20},
			{"all runs, deep", run.ListParams{Limit: 50}, 8, 50},
			{"a run without children", run.ListParams{ParentRunID: "r-2"}, 1, 0},
			{"one run's children, deep", run.ListParams{ParentRunID: "r-1", Limit: 20}, 8, 20},
		} {
			p := c.params
			for page := range c.pages {
				// Enough executions of the statement for Postgres to
				// consider its generic plan.
				for range 6 {
					if _, err := lister.ListRuns(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				before := rowsRead(t, ctx, lister)["kern_run"]
				res, err := lister.ListRuns(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				read := rowsRead(t, ctx, lister)["kern_run"] - before
				if len(res.Runs) != c.want {
					t.Fatalf("%s, %s, page %d: %d runs, want %d", mode, c.name, page+1, len(res.Runs), c.want)
				}
				if read > int64(c.want)+10 {
					t.Fatalf("%s, %s, page %d: read %d of %d runs for a page of %d", mode, c.name, page+1, read, runs, c.want)
				}
				p.Cursor = res.NextCursor
			}
		}
	}
}
