package bench_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/bench"
	"github.com/kern-go/kern/internal/kerntest"
)

// TestPoolerSmoke runs the pooler group small, so it cannot rot: every
// mode measured, no run lost or doubled, PgBouncer alive with a clean log.
// In -short mode (about 7s) it measures one round and leaves out the
// worker processes killed for the recovery figure; the long tier measures
// two interleaved rounds and kills one worker process per mode.
func TestPoolerSmoke(t *testing.T) {
	t.Parallel()
	rounds, kills := 2, 1
	if testing.Short() {
		rounds, kills = 1, 0
	}
	fake, modelURL := kerntest.ModelServer(t)
	env := bench.Env{
		Fake:        fake,
		Model:       agent.OpenAIChat{Client: agent.NewOpenAIClient("k", modelURL), ID: "fake-model"},
		DatabaseURL: func(d *db.DB) string { return d.Pool().Config().ConnString() },
		SpawnPooledWorker: func(name, dbURL, directURL string, rescueAfter time.Duration) (*bench.WorkerProcess, error) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%s|%s|%s", pooledWorkerEnv, name, dbURL, directURL, modelURL, rescueAfter))
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
	ctx := kerntest.Context(t, 3*time.Minute)
	results, err := bench.Run(ctx, env, bench.Config{
		Only: []string{"pooler"}, Submitters: 4, Concurrency: 10,
		Pooler: bench.PoolerConfig{Runs: 30, Rounds: rounds, Samples: 2, Kills: kills, HeartbeatRescueAfter: 1500 * time.Millisecond},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(prefix string) []string {
		t.Helper()
		for _, r := range results {
			if strings.HasPrefix(r.Name, prefix) {
				return strings.Split(r.Value, " / ")
			}
		}
		t.Fatalf("no figure %q in %+v", prefix, results)
		return nil
	}
	for _, r := range results {
		if r.Name == "pooler: PgBouncer modes skipped" {
			t.Skipf("%s (Debian/Ubuntu: apt-get install pgbouncer)", r.Note)
		}
	}
	modes := get("pooler: modes")
	if want := "direct,session,transaction,transaction+direct"; strings.Join(modes, ",") != want {
		t.Fatalf("modes %v; want %s", modes, want)
	}
	figures := []string{"pooler: end-to-end runs/s", "pooler: pickup, idle worker p50", "pooler: WaitRun wake-up p99"}
	if kills > 0 {
		figures = append(figures, "pooler: recovery after SIGKILL max")
		for i, v := range get("pooler: runs lost / doubled") {
			if v != "0+0" {
				t.Errorf("%s: runs lost+doubled %s", modes[i], v)
			}
		}
	}
	for _, name := range figures {
		for i, v := range get(name) {
			if v == "" || v == "0" || v == "0.0" {
				t.Errorf("%s, %s: %q", name, modes[i], v)
			}
		}
	}
	for i, v := range get("pooler: PgBouncer alive, log") {
		if modes[i] != "direct" && v != "alive, log clean" {
			t.Errorf("PgBouncer of %s: %s", modes[i], v)
		}
	}
}
