package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// The "bounded" figures: what kern's periodic and operator statements cost
// with ScaleRows finished runs in the table — a rescue with a backlog of
// pending runs (ScaleRows/100) waiting for busy workers, ListRuns for an
// agent that has no runs, DeleteRuns of ScaleRows/10 old runs — and what
// the indexes that bound them cost every run on its way from submit to
// finish.

// boundedIndexes are the indexes that bound ListRuns by agent and
// DeleteRuns, as migrations/005_bounded.sql creates them; the index-cost
// figure drops and recreates them.
var boundedIndexes = []string{
	`CREATE INDEX IF NOT EXISTS kern_run_finished_idx ON kern_run (finished_at) WHERE finished_at IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS kern_run_agent_idx ON kern_run (agent_name, created_at DESC, id DESC)`,
}

func bounded(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if cfg.ScaleRows == 0 {
		return nil, nil
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := fillFinished(ctx, d, cfg.ScaleRows); err != nil {
		return nil, err
	}
	var out []Result
	for _, figure := range []func(context.Context, Env, Config, *db.DB) ([]Result, error){
		rescueBacklog, listNoMatch, deleteOld, indexCost,
	} {
		res, err := figure(ctx, env, cfg, d)
		if err != nil {
			return out, err
		}
		out = append(out, res...)
	}
	return out, nil
}

// fillFinished fills the table as the scale figure does: n finished runs,
// one in fifty of another agent, one in a hundred failed; then ANALYZE.
func fillFinished(ctx context.Context, d *db.DB, n int) error {
	if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_run (id, agent_name, input, status, content, attempt,
			session_id, created_at, started_at, finished_at)
		SELECT 'scale-' || i, CASE WHEN i % 50 = 0 THEN 'bench-other' ELSE 'bench' END, 'What is the capital of France?',
			CASE WHEN i % 100 = 0 THEN 'error' ELSE 'completed' END,
			'The capital of France is Paris.', 1,
			CASE WHEN i % 1000 = 0 THEN 'session-' || (i / 1000) % 10 ELSE '' END,
			now() - make_interval(secs => $1 - i), now(), now()
		FROM generate_series(1, $1) i`, n); err != nil {
		return err
	}
	_, err := d.Pool().Exec(ctx, `ANALYZE kern_run`)
	return err
}

// rescueBacklog: RescueStale with ScaleRows/100 pending runs an hour old,
// each with an available job (no worker serves their agent: a backlog),
// submitted after the table's last ANALYZE, as a backlog that builds up
// is. It is timed on a connection of its own, which also counts the rows
// it reads.
func rescueBacklog(ctx context.Context, env Env, cfg Config, d *db.DB) ([]Result, error) {
	backlog := max(cfg.ScaleRows/100, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < backlog; i += 8 {
				if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: fmt.Sprintf("backlog-%d", i), AgentName: "bench-backlog",
					Input: "x", Enqueue: true}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET created_at = created_at - interval '1 hour' WHERE status = 'pending'`); err != nil {
		return nil, err
	}
	poolCfg, err := pgxpool.ParseConfig(env.DatabaseURL(d))
	if err != nil {
		return nil, err
	}
	poolCfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	one, err := db.New(pool)
	if err != nil {
		return nil, err
	}
	defer one.Close()
	store := one.Engine(engine.Key{})
	read0, readErr := rowsReadBy(ctx, pool) // needs Postgres 15; the figure says n/a without it
	lat := make([]time.Duration, 0, cfg.Samples)
	for range cfg.Samples {
		t0 := time.Now()
		res, err := store.RescueStale(ctx, 30*time.Second, 3)
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
		if len(res.Requeued)+len(res.Failed) > 0 {
			return nil, fmt.Errorf("rescue figure: a waiting run was rescued: %+v", res)
		}
	}
	read1, err := rowsReadBy(ctx, pool)
	reads := "n/a"
	if err == nil && readErr == nil {
		perCall := func(table string) int64 { return (read1[table] - read0[table]) / int64(cfg.Samples) }
		reads = fmt.Sprintf("%d / %d", perCall("kern_run"), perCall("river_job"))
	}
	return []Result{
		{"RescueStale, pending backlog p50", ms(pct(lat, 50)), fmt.Sprintf("%d pending runs an hour old with available jobs, %d finished runs", backlog, cfg.ScaleRows)},
		{"RescueStale, pending backlog p99", ms(pct(lat, 99)), ""},
		{"RescueStale, rows read per call", reads, fmt.Sprintf("kern_run / river_job, mean of %d calls (pg_stat_user_tables)", cfg.Samples)},
	}, nil
}

// rowsReadBy is how many rows of kern_run and river_job the one backend of
// pool has read, once it has flushed its statistics.
func rowsReadBy(ctx context.Context, pool *pgxpool.Pool) (map[string]int64, error) {
	// The backend flushes as it goes idle after this statement, before it
	// answers; the next statement then reads fresh counters.
	for _, q := range []string{`SELECT pg_stat_force_next_flush()`, `SELECT pg_stat_clear_snapshot()`} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return nil, err
		}
	}
	rows, err := pool.Query(ctx, `SELECT relname::text, COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
		FROM pg_stat_user_tables WHERE relname IN ('kern_run', 'river_job')`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var table string
		var n int64
		if err := rows.Scan(&table, &n); err != nil {
			return nil, err
		}
		out[table] = n
	}
	return out, rows.Err()
}

// listNoMatch: the first page of ListRuns for an agent that has no runs,
// Samples times (the same statement, so its plan is the prepared one).
func listNoMatch(ctx context.Context, _ Env, cfg Config, d *db.DB) ([]Result, error) {
	lat := make([]time.Duration, 0, cfg.Samples)
	for range cfg.Samples {
		t0 := time.Now()
		page, err := d.ListRuns(ctx, run.ListParams{AgentName: "nobody"})
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
		if len(page.Runs) != 0 {
			return nil, fmt.Errorf("list figure: %d runs of agent nobody", len(page.Runs))
		}
	}
	return []Result{
		{"ListRuns, agent with no runs p50", ms(pct(lat, 50)), fmt.Sprintf("%d samples, %d runs in the table", cfg.Samples, cfg.ScaleRows)},
		{"ListRuns, agent with no runs p99", ms(pct(lat, 99)), ""},
	}, nil
}

// deleteOld: DeleteRuns of the ScaleRows/10 oldest runs, finished two days
// ago with three events each, out of ScaleRows. A statement trigger counts
// the runs each DELETE statement removed.
func deleteOld(ctx context.Context, _ Env, cfg Config, d *db.DB) ([]Result, error) {
	n := max(cfg.ScaleRows/10, 1)
	if _, err := d.Pool().Exec(ctx, `
		UPDATE kern_run SET finished_at = now() - interval '2 days' + substr(id, 7)::int * interval '1 millisecond'
		WHERE id LIKE 'scale-%' AND substr(id, 7)::int <= $1`, n); err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `
		INSERT INTO kern_run_event (run_id, seq, type) SELECT 'scale-' || i, s, 'run.x' FROM generate_series(1, $1::int) i, generate_series(1, 3) s`, n); err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `
		ANALYZE kern_run; ANALYZE kern_run_event;
		CREATE TABLE bench_delete_log (n bigint NOT NULL);
		CREATE FUNCTION bench_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO bench_delete_log SELECT count(*) FROM old_rows;
			RETURN NULL;
		END $$;
		CREATE TRIGGER bench_log_delete AFTER DELETE ON kern_run REFERENCING OLD TABLE AS old_rows
			FOR EACH STATEMENT EXECUTE FUNCTION bench_log_delete()`); err != nil {
		return nil, err
	}
	t0 := time.Now()
	deleted, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: 24 * time.Hour})
	took := time.Since(t0)
	if err != nil {
		return nil, err
	}
	if deleted != n {
		return nil, fmt.Errorf("delete figure: deleted %d runs, want %d", deleted, n)
	}
	var statements, largest int64
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE n > 0), COALESCE(max(n), 0) FROM bench_delete_log`).
		Scan(&statements, &largest); err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `DROP TRIGGER bench_log_delete ON kern_run`); err != nil {
		return nil, err
	}
	return []Result{
		{"DeleteRuns, old finished runs", fmt.Sprintf("%.2f s", took.Seconds()),
			fmt.Sprintf("%d of %d runs, 3 events each (%.0f runs/s)", n, cfg.ScaleRows, float64(n)/took.Seconds())},
		{"DeleteRuns, largest statement", fmt.Sprintf("%d runs", largest), fmt.Sprintf("%d DELETE statements", statements)},
	}, nil
}

// indexCost: what boundedIndexes cost a run on its way from submit to
// finish, with and without them, in eight rounds in ABBA BAAB order on the
// full table (each side's figure is the median of its rounds). Two ways: the
// API (submit, start, finish: three statements one after the other, no
// batching; Samples*10 runs a round), where round trips dominate, and the
// same three writes set-based (one statement each for five times as many
// runs), which leaves little but the rows' and indexes' own work.
func indexCost(ctx context.Context, _ Env, cfg Config, d *db.DB) ([]Result, error) {
	store := d.Engine(engine.Key{})
	runs := max(cfg.Samples*10, 100)
	next := 0
	api := func() (time.Duration, error) {
		t0 := time.Now()
		for range runs {
			next++
			id := fmt.Sprintf("cost-%d", next)
			if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "bench", Input: "x"}); err != nil {
				return 0, err
			}
			claim, err := store.StartRun(ctx, id, nil)
			if err != nil {
				return 0, err
			}
			if err := store.FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted, Tail: "Paris."}); err != nil {
				return 0, err
			}
		}
		return time.Since(t0) / time.Duration(runs), nil
	}
	setRuns := runs * 5
	setBased := func(round int) (time.Duration, error) {
		ids := make([]string, setRuns)
		for i := range ids {
			ids[i] = fmt.Sprintf("set-%d-%d", round, i)
		}
		t0 := time.Now()
		for _, q := range []string{
			`INSERT INTO kern_run (id, agent_name, input) SELECT unnest($1::text[]), 'bench', 'x'`,
			`UPDATE kern_run SET status = 'running', attempt = 1, execution = 1, started_at = now(), heartbeat_at = now(),
				event_seq = 1 WHERE id = ANY($1)`,
			`UPDATE kern_run SET status = 'completed', content = 'Paris.', finished_at = now(), event_seq = 2 WHERE id = ANY($1)`,
		} {
			if _, err := d.Pool().Exec(ctx, q, ids); err != nil {
				return 0, err
			}
		}
		return time.Since(t0) / time.Duration(setRuns), nil
	}
	// Each round starts from a vacuumed table and no autovacuum runs during
	// one, so that neither side pays for the dead rows of the other's.
	if _, err := d.Pool().Exec(ctx, `ALTER TABLE kern_run SET (autovacuum_enabled = off)`); err != nil {
		return nil, err
	}
	defer func() {
		_, _ = d.Pool().Exec(context.WithoutCancel(ctx), `ALTER TABLE kern_run RESET (autovacuum_enabled)`)
	}()
	var apiWith, apiWithout, setWith, setWithout []time.Duration
	// ABBA BAAB: a machine that speeds up or slows down over the rounds
	// favours neither side, and each side goes first once.
	for round, with := range []bool{true, false, false, true, false, true, true, false} {
		ddl := boundedIndexes
		if !with {
			ddl = []string{`DROP INDEX IF EXISTS kern_run_finished_idx`, `DROP INDEX IF EXISTS kern_run_agent_idx`}
		}
		if _, err := d.Pool().Exec(ctx, strings.Join(ddl, ";")); err != nil {
			return nil, err
		}
		if _, err := d.Pool().Exec(ctx, `VACUUM kern_run`); err != nil { // not in a transaction: a statement of its own
			return nil, err
		}
		perAPI, err := api()
		if err != nil {
			return nil, err
		}
		perSet, err := setBased(round)
		if err != nil {
			return nil, err
		}
		if with {
			apiWith, setWith = append(apiWith, perAPI), append(setWith, perSet)
		} else {
			apiWithout, setWithout = append(apiWithout, perAPI), append(setWithout, perSet)
		}
	}
	if _, err := d.Pool().Exec(ctx, strings.Join(boundedIndexes, ";")); err != nil {
		return nil, err
	}
	return []Result{
		costResult("submit → finish per run (API), with / without the finished+agent indexes", apiWith, apiWithout,
			fmt.Sprintf("%d runs a round, ABBA BAAB, %d rows in the table", runs, cfg.ScaleRows)),
		costResult("submit → finish per run (set-based), with / without them", setWith, setWithout,
			fmt.Sprintf("%d runs a round, three statements", setRuns)),
	}, nil
}

// costResult formats a with/without comparison of per-run times.
func costResult(name string, with, without []time.Duration, note string) Result {
	median := func(xs []time.Duration) time.Duration {
		s := slices.Clone(xs)
		slices.Sort(s)
		return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
	}
	us := func(x time.Duration) string { return fmt.Sprintf("%.1f", float64(x.Nanoseconds())/1000) }
	rounds := func(xs []time.Duration) string {
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = us(x)
		}
		return strings.Join(parts, ", ")
	}
	w, wo := median(with), median(without)
	return Result{name, fmt.Sprintf("%s / %s µs", us(w), us(wo)),
		fmt.Sprintf("%+.1f%%; rounds with (%s), without (%s); %s", 100*(float64(w)/float64(wo)-1), rounds(with), rounds(without), note)}
}
