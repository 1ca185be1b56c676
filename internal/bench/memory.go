package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// memory: the RSS of a worker process (a separate process, so the figure is
// the worker's alone) holding InFlight slow-streaming runs at once; and its
// RSS after 1,000 runs against after RSSRuns runs, which must not grow.
func memory(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if env.SpawnWorker == nil || (cfg.InFlight == 0 && cfg.RSSRuns == 0) {
		return nil, nil
	}
	var out []Result
	if cfg.InFlight > 0 {
		rss, err := inFlightRSS(ctx, env, cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, Result{"worker RSS, runs in flight", mib(rss),
			fmt.Sprintf("%d runs streaming at once (slow drip) in one worker process; target < 300 MB", cfg.InFlight)})
	}
	if cfg.RSSRuns > 1000 {
		early, late, err := rssGrowth(ctx, env, cfg)
		if err != nil {
			return nil, err
		}
		out = append(out,
			Result{"worker RSS after 1k runs", mib(early), "zero-latency runs, 50 at a time"},
			Result{fmt.Sprintf("worker RSS after %dk runs", cfg.RSSRuns/1000), mib(late),
				fmt.Sprintf("%+.0f%% (target within 20%%)", 100*(float64(late)/float64(early)-1))})
	}
	return out, nil
}

func inFlightRSS(ctx context.Context, env Env, cfg Config) (int64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	env.Fake.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(600), Drip: 50 * time.Millisecond} // ~30 s each
	})
	w, err := env.SpawnWorker("inflight", env.DatabaseURL(d), cfg.InFlight)
	if err != nil {
		return 0, err
	}
	defer w.Kill()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	before := env.Fake.Count()
	for range cfg.InFlight {
		if _, err := a.Run(ctx, "stream slowly", agent.Background(true)); err != nil {
			return 0, err
		}
	}
	if err := env.Fake.WaitRequests(ctx, before+cfg.InFlight); err != nil {
		return 0, err
	}
	if err := sleep(ctx, 3*time.Second); err != nil { // a few flushes into every run
		return 0, err
	}
	return rssOf(w.PID)
}

func rssGrowth(ctx context.Context, env Env, cfg Config) (early, late int64, err error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	env.Fake.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Content: "The capital of France is Paris."} })
	w, err := env.SpawnWorker("growth", env.DatabaseURL(d), 50)
	if err != nil {
		return 0, 0, err
	}
	defer w.Kill()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	// work runs n more runs; done counts them from the table, less those
	// finished before.
	work := func(n, before int) error {
		c := cfg
		c.Runs = n
		_, err := drive(ctx, c, func() error {
			_, err := a.Run(ctx, "q", agent.Background(true))
			return err
		}, func() (int, error) {
			finished, err := countFinished(ctx, d)
			return finished - before, err
		})
		return err
	}
	if err := work(1000, 0); err != nil {
		return 0, 0, err
	}
	if early, err = rssOf(w.PID); err != nil {
		return 0, 0, err
	}
	if err := work(cfg.RSSRuns-1000, 1000); err != nil {
		return 0, 0, err
	}
	late, err = rssOf(w.PID)
	return early, late, err
}

func countFinished(ctx context.Context, d *db.DB) (int, error) {
	var n int
	err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE status IN ('completed', 'error', 'cancelled')`).Scan(&n)
	return n, err
}

// rssOf reads a process's resident set size from /proc (Linux).
func rssOf(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("rss of %d: no VmRSS", pid)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// scale: GetRun p99 with ScaleRows finished runs in the table.
func scale(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if cfg.ScaleRows == 0 {
		return nil, nil
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	start := time.Now()
	// One run in a hundred failed, one in fifty is another agent's, one in
	// a thousand has a session: the filtered lists below look for needles
	// in the million.
	if _, err := d.Pool().Exec(ctx, `INSERT INTO kern_run (id, agent_name, input, status, content, attempt,
			session_id, created_at, started_at, finished_at)
		SELECT 'scale-' || i, CASE WHEN i % 50 = 0 THEN 'bench-other' ELSE 'bench' END, 'What is the capital of France?',
			CASE WHEN i % 100 = 0 THEN 'error' ELSE 'completed' END,
			'The capital of France is Paris.', 1,
			CASE WHEN i % 1000 = 0 THEN 'session-' || (i / 1000) % 10 ELSE '' END,
			now() - make_interval(secs => $1 - i), now(), now()
		FROM generate_series(1, $1) i`, cfg.ScaleRows); err != nil {
		return nil, err
	}
	if _, err := d.Pool().Exec(ctx, `ANALYZE kern_run`); err != nil {
		return nil, err
	}
	fill := time.Since(start)
	lat := make([]time.Duration, 0, cfg.Samples)
	for i := range cfg.Samples {
		id := fmt.Sprintf("scale-%d", 1+(i*7919)%cfg.ScaleRows)
		t0 := time.Now()
		out, err := d.GetRun(ctx, id)
		if err != nil {
			return nil, err
		}
		if !out.Status.Terminal() {
			return nil, fmt.Errorf("scale: %s is %s", id, out.Status)
		}
		lat = append(lat, time.Since(t0))
	}
	out := []Result{
		{"GetRun p50", ms(pct(lat, 50)), fmt.Sprintf("%d finished runs in the table (filled in %v)", cfg.ScaleRows, fill.Round(time.Second))},
		{"GetRun p99", ms(pct(lat, 99)), "target ≤ 5 ms"},
	}
	for _, l := range []struct {
		name, note string
		params     run.ListParams
	}{
		{"ListRuns page p50", "50 runs a page, newest first, paging on by cursor", run.ListParams{}},
		{"ListRuns page, status=error p50", "1 run in 100 matches", run.ListParams{Statuses: []run.Status{run.StatusError}}},
		{"ListRuns page, one session p50", "1 run in 10,000 matches", run.ListParams{SessionID: "session-3"}},
		{"ListRuns page, status=running p50", "none match", run.ListParams{Statuses: []run.Status{run.StatusRunning}}},
		{"ListRuns page, agent=nobody p50", "none match", run.ListParams{AgentName: "nobody"}},
		{"ListRuns page, one agent p50", "1 run in 50 matches", run.ListParams{AgentName: "bench-other"}},
		{"ListRuns page, every filter p50", "status, agent, session and name at once; none match",
			run.ListParams{Statuses: []run.Status{run.StatusError}, AgentName: "bench", SessionID: "session-3", Name: "nightly"}},
	} {
		p50, p99, err := listPages(ctx, d, l.params, cfg.Samples)
		if err != nil {
			return nil, err
		}
		out = append(out, Result{l.name, ms(p50), l.note}, Result{strings.Replace(l.name, "p50", "p99", 1), ms(p99), ""})
	}
	return append(out, cliList(ctx, env, d)...), nil
}

// cliList times `kern runs list` as a person runs it: a process start, a
// connection, one page, the table printed. It needs Env.KernCLI.
func cliList(ctx context.Context, env Env, d *db.DB) []Result {
	if env.KernCLI == nil {
		return nil
	}
	bin, err := env.KernCLI()
	if err != nil {
		return []Result{{"kern runs list wall time", "not measured", err.Error()}}
	}
	url := d.Pool().Config().ConnString()
	var lat []time.Duration
	for range 20 {
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, bin, "runs", "list", "--database-url", url).CombinedOutput()
		if err != nil {
			return []Result{{"kern runs list wall time", "failed", fmt.Sprintf("%v: %s", err, out)}}
		}
		lat = append(lat, time.Since(t0))
	}
	return []Result{
		{"kern runs list wall time p50", ms(pct(lat, 50)), "the CLI as a subprocess, 20 times: start, connect, one page of 50, the table"},
		{"kern runs list wall time p99", ms(pct(lat, 99)), "target ≤ 150 ms"},
	}
}

// listPages times up to samples pages of ListRuns, following the cursor
// from the newest run.
func listPages(ctx context.Context, d *db.DB, p run.ListParams, samples int) (p50, p99 time.Duration, err error) {
	lat := make([]time.Duration, 0, samples)
	for range samples {
		t0 := time.Now()
		page, err := d.ListRuns(ctx, p)
		if err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t0))
		if page.NextCursor == "" {
			break
		}
		p.Cursor = page.NextCursor
	}
	return pct(lat, 50), pct(lat, 99), nil
}
