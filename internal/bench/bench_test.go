package bench_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/bench"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSmoke runs every figure small, so the benchmark cannot rot: it fails
// if a run is lost, a cancel does not cancel, or a figure is missing.
func TestSmoke(t *testing.T) {
	t.Parallel()
	fake, model := kerntest.Model(t)
	env := bench.Env{
		Fake:  fake,
		Model: model,
		NewDB: func(ctx context.Context) (*db.DB, func(), error) {
			d, err := db.Open(ctx, kerntest.WithPoolSize(kerntest.DatabaseURL(t), kerntest.TestPoolSize))
			if err != nil {
				return nil, nil, err
			}
			return d, d.Close, nil
		},
	}
	ctx := kerntest.Context(t, 2*time.Minute)
	results, err := bench.Run(ctx, env, bench.Config{
		Runs: 100, Submitters: 4, Concurrency: 10, Samples: 10, ScaleRows: 2000,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"submit latency p50", "end-to-end runs/s", "CancelRun → cancelled p99", "CancelRun → model stream closed p50", "WaitRun wake-up p50", "event delivery lag p50", "GetRun p99"}
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
}
