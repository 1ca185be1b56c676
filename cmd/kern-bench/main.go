// Command kern-bench measures kern's figures on this machine: submit
// latency, end-to-end background runs/s, CancelRun latency (to cancelled and
// to the model's HTTP stream closing) and WaitRun wake-up, against a real
// Postgres (DATABASE_URL, else a throwaway one) and the fake model over HTTP.
//
// Then it measures the groups named by -stock again on a second throwaway
// cluster with Postgres's default settings (fsync and synchronous_commit
// on, data on disk: pgtest.StartStock), and prints a table for each,
// headed with the server's settings.
//
//	go run ./cmd/kern-bench -runs 5000 -samples 500
//	go run ./cmd/kern-bench -only e2e -stock ""      (the first cluster only)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/bench"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/pgtest"
)

func main() {
	var cfg bench.Config
	flag.IntVar(&cfg.Runs, "runs", 5000, "end-to-end runs")
	flag.IntVar(&cfg.Submitters, "submitters", 8, "concurrent submitters")
	flag.IntVar(&cfg.Concurrency, "concurrency", 100, "worker MaxConcurrentRuns")
	flag.IntVar(&cfg.Rounds, "rounds", 5, "alternating kern/floor rounds of the end-to-end figure (medians are printed)")
	flag.IntVar(&cfg.Samples, "samples", 500, "samples per latency figure")
	flag.IntVar(&cfg.SteadyRate, "steady-rate", 800, "offered load, runs/s, of the steady group's submit latency (kern and the floor alike)")
	// River's default FetchCooldown (100ms) caps a worker at MaxWorkers
	// fetches ten times a second, which would make kern and the floor both
	// measure that cap; the bench fetches as a throughput-tuned worker does.
	flag.DurationVar(&cfg.FetchCooldown, "fetch-cooldown", 5*time.Millisecond, "River FetchCooldown for kern and the floor (0: River's 100ms)")
	flag.DurationVar(&cfg.FetchPollInterval, "fetch-poll", 100*time.Millisecond, "River FetchPollInterval (0: River's 1s)")
	flag.IntVar(&cfg.RecoveryRounds, "recovery-rounds", 0, "worker processes to SIGKILL for the recovery figure (10 runs each, ~35s each)")
	flag.IntVar(&cfg.ToolKills, "tool-kills", 20, "worker processes to SIGKILL between two tool calls for the toolrecovery figure (5 runs each, ~4s each; 0: skip)")
	flag.IntVar(&cfg.WaitingRuns, "waiting-runs", 10000, "runs waiting for an approval at once for the approval group's cost figure (0: skip)")
	only := flag.String("only", "", "comma-separated figure groups: submit,e2e,heartbeat,cancel,wait,events,pickup,recovery,memory,scale,bounded,tools,toolrecovery,approval,schedules,perkey,retention,follow,http,ratelimit,telemetry,steady,pooler (pooler only when named)")
	flag.IntVar(&cfg.Pooler.Runs, "pooler-runs", 2000, "pooler group: background runs per mode and round for runs/s")
	flag.IntVar(&cfg.Pooler.Rounds, "pooler-rounds", 3, "pooler group: interleaved rounds of the four modes")
	flag.IntVar(&cfg.Pooler.Samples, "pooler-samples", 40, "pooler group: idle pickups and WaitRun wake-ups per mode")
	flag.IntVar(&cfg.Pooler.Kills, "pooler-kills", 2, "pooler group: worker processes SIGKILLed per mode, 5 runs each (0: skip)")
	flag.DurationVar(&cfg.Pooler.HeartbeatRescueAfter, "pooler-rescue-after", 5*time.Second, "pooler group: RescueAfter of the transaction mode without a direct URL (heartbeat rule)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	workerName := flag.String("worker", "", "internal: run as a worker process with this name")
	workerDB := flag.String("worker-db", "", "internal: the worker process's database URL")
	workerModel := flag.String("worker-model", "", "internal: the worker process's model base URL")
	workerConcurrency := flag.Int("worker-concurrency", 20, "internal: the worker process's MaxConcurrentRuns")
	workerTools := flag.Bool("worker-tools", false, "internal: the worker process serves the tool agent (bench.RunToolWorkerProcess)")
	workerRescueAfter := flag.Duration("worker-rescue-after", 0, "internal: the worker process's RescueAfter (0: default)")
	workerDirectDB := flag.String("worker-direct-db", "", "internal: the worker process's direct database URL (db.WithDirectURL)")
	flag.IntVar(&cfg.InFlight, "inflight", 1000, "streaming runs in flight in one worker process for the memory figure (0: skip)")
	flag.IntVar(&cfg.RSSRuns, "rss-runs", 100000, "runs one worker process works for the RSS growth figure (0: skip)")
	flag.IntVar(&cfg.ScaleRows, "scale-rows", 1000000, "finished runs in the table for the GetRun figure (0: skip)")
	flag.IntVar(&cfg.RetentionRows, "retention-rows", 1000000, "expired finished runs a worker deletes while runs flow, for the retention figure (0: skip)")
	stockGroups := flag.String("stock", defaultStock, `comma-separated figure groups to measure again on a stock-settings cluster (fsync on, data on disk); "" skips it. Unset, with -only: the groups of -only among `+defaultStock)
	var stock stockSizes
	flag.IntVar(&stock.runs, "stock-runs", 0, "end-to-end runs on the stock cluster (0: -runs)")
	flag.IntVar(&stock.rounds, "stock-rounds", 0, "alternating kern/floor rounds on the stock cluster (0: -rounds)")
	flag.IntVar(&stock.samples, "stock-samples", 0, "samples per latency figure on the stock cluster (0: -samples)")
	flag.Parse()
	if *workerName != "" {
		wcfg := agent.WorkerConfig{
			MaxConcurrentRuns: *workerConcurrency,
			RescueAfter:       *workerRescueAfter,
			FetchCooldown:     cfg.FetchCooldown,
			FetchPollInterval: cfg.FetchPollInterval,
		}
		var opts []db.Option
		if *workerDirectDB != "" {
			opts = append(opts, db.WithDirectURL(*workerDirectDB))
		}
		var err error
		if *workerTools {
			err = bench.RunToolWorkerProcess(*workerName, *workerDB, *workerModel, wcfg)
		} else {
			err = bench.RunWorkerProcess(*workerName, *workerDB, *workerModel, wcfg, opts...)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kern-bench worker:", err)
			os.Exit(1)
		}
		return
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	stock.groups = stockGroupList(*stockGroups, flagSet("stock"), cfg.Only)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kern-bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(context.Background(), cfg, stock); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "kern-bench:", err)
		os.Exit(1)
	}
}

// defaultStock are the groups measured on the stock cluster too: the ones
// a commit's WAL flush is part of (submit, the end-to-end rate against the
// floor, pickup and the rate at kern's defaults, submit latency at a steady
// load).
const defaultStock = "submit,e2e,pickup,steady"

// stockSizes are the stock cluster's groups and its sizes (0: as for the
// first cluster).
type stockSizes struct {
	groups                []string
	runs, rounds, samples int
}

// stockGroupList is -stock's groups. Left unset, it is defaultStock, or
// when -only is given the groups of -only that defaultStock names, so
// `-only recovery` measures nothing twice and `-only e2e` both clusters.
func stockGroupList(value string, set bool, only []string) []string {
	if value == "" {
		return nil
	}
	groups := strings.Split(value, ",")
	if set || len(only) == 0 {
		return groups
	}
	var out []string
	for _, g := range groups {
		if slices.Contains(only, g) {
			out = append(out, g)
		}
	}
	return out
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// table is the figures of one cluster.
type table struct {
	header  string
	results []bench.Result
}

func run(ctx context.Context, cfg bench.Config, stock stockSizes) error {
	fake := fakellm.New()
	fake.SetLogLimit(1000)
	base, stop, err := fake.Start()
	if err != nil {
		return err
	}
	defer stop()

	start := time.Now()
	var tables []table
	srv, err := pgtest.Start(ctx)
	if err != nil {
		return err
	}
	t, err := measure(ctx, srv, fake, base, cfg, "")
	_ = srv.Stop(context.Background())
	if err != nil {
		return err
	}
	tables = append(tables, t)

	if len(stock.groups) > 0 {
		scfg := cfg
		scfg.Only = stock.groups
		var sized []string
		if stock.runs > 0 && stock.runs != cfg.Runs {
			scfg.Runs = stock.runs
			sized = append(sized, fmt.Sprintf("%d runs", stock.runs))
		}
		if stock.rounds > 0 && stock.rounds != cfg.Rounds {
			scfg.Rounds = stock.rounds
			sized = append(sized, fmt.Sprintf("%d rounds", stock.rounds))
		}
		if stock.samples > 0 && stock.samples != cfg.Samples {
			scfg.Samples = stock.samples
			sized = append(sized, fmt.Sprintf("%d samples", stock.samples))
		}
		note := "groups " + strings.Join(stock.groups, ",")
		if len(sized) > 0 {
			note += "; unlike above: " + strings.Join(sized, ", ")
		}
		srv, err := pgtest.StartStock(ctx)
		switch {
		case errors.Is(err, pgtest.ErrNoLocalPostgres):
			tables = append(tables, table{header: "stock-settings cluster skipped: " + err.Error()})
		case err != nil:
			return err
		default:
			t, err := measure(ctx, srv, fake, base, scfg, note)
			_ = srv.Stop(context.Background())
			if err != nil {
				return err
			}
			tables = append(tables, t)
		}
	}

	fmt.Printf("kern-bench on %d CPUs, %s, %v total\n", runtime.NumCPU(), runtime.Version(), time.Since(start).Round(time.Second))
	for _, t := range tables {
		fmt.Printf("\n%s\n", t.header)
		if len(t.results) == 0 {
			continue
		}
		fmt.Println()
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "figure\tvalue\tconditions")
		for _, r := range t.results {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Value, r.Note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// measure runs cfg's figure groups on srv and heads them with the server's
// kind and durability settings as the server reports them.
func measure(ctx context.Context, srv *pgtest.Server, fake *fakellm.Server, base string, cfg bench.Config, note string) (table, error) {
	settings, err := serverSettings(ctx, srv.AdminURL)
	if err != nil {
		return table{}, err
	}
	if dir, ok := srv.DataDir(); ok {
		settings += " data_directory=" + dir
	}
	admin, err := pgx.Connect(ctx, srv.AdminURL)
	if err != nil {
		return table{}, err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	env := bench.Env{
		Fake:  fake,
		Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("bench", base), ID: "fake-model"},
		SpawnWorker: func(name, dbURL string, concurrency int) (*bench.WorkerProcess, error) {
			return spawnWorker(name, dbURL, base, concurrency, cfg)
		},
		SpawnToolWorker: func(name, dbURL string, rescueAfter time.Duration) (*bench.WorkerProcess, error) {
			return spawnWorker(name, dbURL, base, 20, cfg, "-worker-tools", "-worker-rescue-after", rescueAfter.String())
		},
		SpawnPooledWorker: func(name, dbURL, directURL string, rescueAfter time.Duration) (*bench.WorkerProcess, error) {
			return spawnWorker(name, dbURL, base, 20, cfg, "-worker-direct-db", directURL, "-worker-rescue-after", rescueAfter.String())
		},
		DatabaseURL: func(d *db.DB) string { return d.Pool().Config().ConnString() },
		PostgresCPU: func() (time.Duration, bool) {
			pid, ok := srv.PostmasterPID()
			if !ok {
				return 0, false
			}
			return bench.ProcessTreeCPU(pid)
		},
		KernCLI: buildKernCLI,
		PostgresCounters: func(ctx context.Context) (bench.PostgresCounters, error) {
			var c bench.PostgresCounters
			err := admin.QueryRow(ctx, bench.PostgresCountersQuery).Scan(&c.Xacts, &c.WALBytes, &c.WALSyncs)
			return c, err
		},
		NewDB: func(ctx context.Context) (*db.DB, func(), error) {
			url, err := srv.CreateDatabase(ctx, "kern_bench")
			if err != nil {
				return nil, nil, err
			}
			d, err := db.Open(ctx, url)
			if err == nil {
				err = d.Migrate(ctx)
			}
			if err != nil {
				_ = srv.DropDatabase(context.Background(), url)
				return nil, nil, err
			}
			return d, func() { d.Close(); _ = srv.DropDatabase(context.Background(), url) }, nil
		},
	}
	start := time.Now()
	results, err := bench.Run(ctx, env, cfg)
	if err != nil {
		return table{}, fmt.Errorf("%s: %w", srv.Kind, err)
	}
	took := time.Since(start).Round(time.Second)
	header := fmt.Sprintf("Postgres from %s, %v", srv.Kind, took)
	if note != "" {
		header += "; " + note
	}
	return table{header: header + "\n" + settings, results: results}, nil
}

// serverSettings reads what decides how much a commit costs, as the server
// reports it.
func serverSettings(ctx context.Context, adminURL string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	names := []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "wal_sync_method"}
	parts := make([]string, len(names))
	for i, n := range names {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", n).Scan(&v); err != nil {
			return "", fmt.Errorf("SHOW %s: %w", n, err)
		}
		parts[i] = n + "=" + v
	}
	return strings.Join(parts, " "), nil
}

// spawnWorker starts this binary as a worker process, fetching with the
// bench's River settings; extra are more of its flags.
func spawnWorker(name, dbURL, modelURL string, concurrency int, cfg bench.Config, extra ...string) (*bench.WorkerProcess, error) {
	args := append([]string{"-worker", name, "-worker-db", dbURL,
		"-worker-model", modelURL, "-worker-concurrency", strconv.Itoa(concurrency),
		"-fetch-cooldown", cfg.FetchCooldown.String(), "-fetch-poll", cfg.FetchPollInterval.String()}, extra...)
	return bench.StartProcess(name, exec.Command(os.Args[0], args...))
}

// buildKernCLI builds the kern command once, into a temporary directory,
// for the scale group's `kern runs list` figure.
var buildKernCLI = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kern-bench-cli-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kern")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/kern-go/kern/cmd/kern").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kern: %v: %s", err, out)
	}
	return bin, nil
})
