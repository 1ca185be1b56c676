package agent_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
)

// BenchmarkKeyHandoff drains a backlog of runs of one concurrency key with
// MaxRunsPerKey 1 (one worker, an instant model) and reports the drain
// time and the slot handoff: from one run's finish to the next run's start,
// by Postgres's clock (finished_at, started_at).
//
//	go test -run '^$' -bench KeyHandoff -benchtime 1x ./agent
func BenchmarkKeyHandoff(b *testing.B) {
	for _, n := range []int{50, 200} {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			d := kerntest.DB(b)
			srv, model := kerntest.Model(b)
			srv.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Content: "ok"} })
			a := &agent.Agent{Name: "assistant", Model: model, DB: d}
			kerntest.Worker(b, d, agent.WorkerConfig{MaxRunsPerKey: 1}, a)
			ctx := kerntest.Context(b, 10*time.Minute)
			var handoffs []time.Duration
			var drain time.Duration
			for i := 0; i < b.N; i++ {
				key := fmt.Sprintf("key-%d", i)
				ids := make([]string, n)
				for j := range n {
					out, err := a.Run(ctx, "hello", agent.Background(true), agent.WithConcurrencyKey(key))
					if err != nil {
						b.Fatal(err)
					}
					ids[j] = out.RunID
				}
				started := time.Now()
				for _, id := range ids {
					if _, err := a.WaitRun(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				drain += time.Since(started)
				rows, err := d.Pool().Query(ctx, `SELECT started_at - lag(finished_at) OVER (ORDER BY started_at)
					FROM kern_run WHERE concurrency_key = $1 ORDER BY started_at`, key)
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
					var gap *time.Duration
					if err := rows.Scan(&gap); err != nil {
						b.Fatal(err)
					}
					if gap != nil {
						handoffs = append(handoffs, *gap)
					}
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(handoffs)
			pct := func(p float64) time.Duration { return handoffs[int(p*float64(len(handoffs)-1))] }
			b.ReportMetric(float64(drain.Milliseconds())/float64(b.N), "drain-ms")
			b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "handoff-p50-ms")
			b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "handoff-p99-ms")
		})
	}
}
