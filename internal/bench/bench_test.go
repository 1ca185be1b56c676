package bench_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/bench"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
)

// The test binary doubles as the worker process of the memory figures.
const workerEnv = "KERN_BENCH_TEST_WORKER"

// The pooler group's worker processes: name|dbURL|directURL|modelURL|rescueAfter.
const pooledWorkerEnv = "KERN_BENCH_TEST_POOLED_WORKER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(pooledWorkerEnv); spec != "" {
		f := strings.SplitN(spec, "|", 5)
		cfg := agent.WorkerConfig{MaxConcurrentRuns: 20}
		cfg.RescueAfter, _ = time.ParseDuration(f[4])
		var opts []db.Option
		if f[2] != "" {
			opts = append(opts, db.WithDirectURL(f[2]))
		}
		if err := bench.RunWorkerProcess(f[0], f[1], f[3], cfg, opts...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if spec := os.Getenv(workerEnv); spec != "" {
		// name|dbURL|modelURL|concurrency[|rescueAfter: a tool worker]
		f := strings.SplitN(spec, "|", 5)
		n, _ := strconv.Atoi(f[3])
		cfg := agent.WorkerConfig{MaxConcurrentRuns: n}
		body := func() error { return bench.RunWorkerProcess(f[0], f[1], f[2], cfg) }
		if len(f) == 5 {
			cfg.RescueAfter, _ = time.ParseDuration(f[4])
			body = func() error { return bench.RunToolWorkerProcess(f[0], f[1], f[2], cfg) }
		}
		if err := body(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	pgtest.Main(m)
}

// TestSmoke runs every figure small, so the benchmark cannot rot: it fails
// if a run is lost, a cancel does not cancel, or a figure is missing. It
// is the suite's longest test (a minute or two on 2 cores, more on a
// loaded machine): the long tier (make test-long), not -short. What it
// checks of kern itself (no run lost, cancel, recovery after SIGKILL,
// retention) the agent and db packages test in both tiers.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("every benchmark figure, small: the long tier (make test-long)")
	}
	t.Parallel()
	fake, modelURL := kerntest.ModelServer(t)
	env := bench.Env{
		Fake:        fake,
		Model:       agent.OpenAIChat{Client: agent.NewOpenAIClient("k", modelURL), ID: "fake-model"},
		DatabaseURL: func(d *db.DB) string { return d.Pool().Config().ConnString() },
		SpawnWorker: func(name, dbURL string, concurrency int) (*bench.WorkerProcess, error) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%s|%d", workerEnv, name, dbURL, modelURL, concurrency))
			return bench.StartProcess(name, cmd)
		},
		SpawnToolWorker: func(name, dbURL string, rescueAfter time.Duration) (*bench.WorkerProcess, error) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%s|20|%s", workerEnv, name, dbURL, modelURL, rescueAfter))
			return bench.StartProcess(name, cmd)
		},
		NewDB: func(ctx context.Context) (*db.DB, func(), error) {
			d, err := db.Open(ctx, kerntest.WithPoolSize(kerntest.DatabaseURL(t), kerntest.TestPoolSize))
			if err != nil {
				return nil, nil, err
			}
			return d, d.Close, nil
		},
	}
	// The deadline only bounds a hang: the figures take what the machine
	// gives them (twice the 2 minutes a loaded 2-core machine once ran out
	// of, short of go test's own -timeout).
	ctx := kerntest.Context(t, 8*time.Minute)
	results, err := bench.Run(ctx, env, bench.Config{
		Runs: 100, Rounds: 2, Submitters: 4, Concurrency: 10, Samples: 10, ScaleRows: 2000, RetentionRows: 2000, InFlight: 20, RSSRuns: 1500, ToolKills: 1, WaitingRuns: 50,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"submit latency p50", "River floor submit latency p50", "River JobCancel → job context cancelled p50", "end-to-end runs/s", "CancelRun → cancelled p99", "CancelRun → model stream closed p50", "WaitRun wake-up p50", "event delivery lag p50", "GetRun p99", "ListRuns page p99", "ListRuns page, status=error p99",
		"worker RSS, runs in flight", "worker RSS after 1k runs", "runs/s, 3-step tool run (2 tool turns + answer)", "round trips per persisted step",
		"tool run recovery after SIGKILL p50 / max", "schedule firing delay p99",
		"2k expired runs deleted in", "end-to-end p50/p99 at 100 runs/s, retention idle / deleting 2k",
		"submit latency at a steady 800 runs/s p50 / p99: kern / floor"}
	for _, r := range results {
		if (r.Name == "tool calls duplicated" || r.Name == "first turns asked again" || r.Name == "runs lost" || r.Name == "live runs deleted by retention") && !strings.HasPrefix(r.Value, "0 of ") {
			t.Errorf("%s: %s (%s)", r.Name, r.Value, r.Note)
		}
	}
	for _, name := range want {
		found := false
		for _, r := range results {
			if r.Name == name && r.Value != "" && !strings.HasPrefix(r.Value, "0 ") {
				found = true
			}
		}
		if !found {
			t.Errorf("figure %q missing from %+v", name, results)
		}
	}
	// Every group stops what it started: the http group's server once left
	// River UI's background services polling a closed pool.
	deadline := time.Now().Add(30 * time.Second)
	for {
		buf := make([]byte, 1<<22)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "riverqueue.com/riverui") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("River UI's goroutines still run after the figures returned:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
