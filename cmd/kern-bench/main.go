// Command kern-bench measures kern's figures on this machine: submit
// latency, end-to-end background runs/s, CancelRun latency (to cancelled and
// to the model's HTTP stream closing) and WaitRun wake-up, against a real
// Postgres (DATABASE_URL, else a throwaway one) and the fake model over HTTP.
//
//	go run ./cmd/kern-bench -runs 5000 -samples 500
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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
	// River's default FetchCooldown (100ms) caps a worker at MaxWorkers
	// fetches ten times a second, which would make kern and the floor both
	// measure that cap; the bench fetches as a throughput-tuned worker does.
	flag.DurationVar(&cfg.FetchCooldown, "fetch-cooldown", 5*time.Millisecond, "River FetchCooldown for kern and the floor (0: River's 100ms)")
	flag.DurationVar(&cfg.FetchPollInterval, "fetch-poll", 100*time.Millisecond, "River FetchPollInterval (0: River's 1s)")
	flag.IntVar(&cfg.RecoveryRounds, "recovery-rounds", 0, "worker processes to SIGKILL for the recovery figure (10 runs each, ~35s each)")
	only := flag.String("only", "", "comma-separated figure groups: submit,e2e,heartbeat,cancel,wait,events,pickup,recovery,memory,scale")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	workerName := flag.String("worker", "", "internal: run as a worker process with this name")
	workerDB := flag.String("worker-db", "", "internal: the worker process's database URL")
	workerModel := flag.String("worker-model", "", "internal: the worker process's model base URL")
	workerConcurrency := flag.Int("worker-concurrency", 20, "internal: the worker process's MaxConcurrentRuns")
	flag.IntVar(&cfg.InFlight, "inflight", 1000, "streaming runs in flight in one worker process for the memory figure (0: skip)")
	flag.IntVar(&cfg.RSSRuns, "rss-runs", 100000, "runs one worker process works for the RSS growth figure (0: skip)")
	flag.IntVar(&cfg.ScaleRows, "scale-rows", 1000000, "finished runs in the table for the GetRun figure (0: skip)")
	flag.Parse()
	if *workerName != "" {
		if err := bench.RunWorkerProcess(*workerName, *workerDB, *workerModel, agent.WorkerConfig{
			MaxConcurrentRuns: *workerConcurrency,
			FetchCooldown:     cfg.FetchCooldown,
			FetchPollInterval: cfg.FetchPollInterval,
		}); err != nil {
			fmt.Fprintln(os.Stderr, "kern-bench worker:", err)
			os.Exit(1)
		}
		return
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
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
	if err := run(context.Background(), cfg); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "kern-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg bench.Config) error {
	srv, err := pgtest.Start(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Stop(context.Background()) }()

	fake := fakellm.New()
	fake.SetLogLimit(1000)
	base, stop, err := fake.Start()
	if err != nil {
		return err
	}
	defer stop()

	env := bench.Env{
		Fake:  fake,
		Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("bench", base), ID: "fake-model"},
		SpawnWorker: func(name, dbURL string, concurrency int) (*bench.WorkerProcess, error) {
			return spawnWorker(name, dbURL, base, concurrency, cfg)
		},
		DatabaseURL: func(d *db.DB) string { return d.Pool().Config().ConnString() },
		PostgresCPU: func() (time.Duration, bool) {
			pid, ok := srv.PostmasterPID()
			if !ok {
				return 0, false
			}
			return bench.ProcessTreeCPU(pid)
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
		return err
	}
	fmt.Printf("kern-bench on %d CPUs, %s, Postgres from %s, %v total\n\n", runtime.NumCPU(), runtime.Version(), srv.Kind, time.Since(start).Round(time.Second))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tconditions")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Value, r.Note)
	}
	return tw.Flush()
}

// spawnWorker starts this binary as a worker process and waits until it
// works.
// spawnWorker starts this binary as a worker process, fetching with the
// bench's River settings.
func spawnWorker(name, dbURL, modelURL string, concurrency int, cfg bench.Config) (*bench.WorkerProcess, error) {
	return bench.StartProcess(name, exec.Command(os.Args[0], "-worker", name, "-worker-db", dbURL,
		"-worker-model", modelURL, "-worker-concurrency", strconv.Itoa(concurrency),
		"-fetch-cooldown", cfg.FetchCooldown.String(), "-fetch-poll", cfg.FetchPollInterval.String()))
}
