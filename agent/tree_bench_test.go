package agent_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
)

// BenchmarkTreeCancel: a run alone (levels=1), and a root with its child
// and grandchild (levels=3), stream (their model calls hang); CancelRun of
// the root until the last model stream is closed, by the fake model's
// clock (ClientGoneAt), and until CancelRun returns. Side by side in one
// run.
//
//	go test -run '^$' -bench TreeCancel -benchtime 200x ./agent
func BenchmarkTreeCancel(b *testing.B) {
	for _, levels := range []int{1, 3} {
		b.Run(fmt.Sprintf("levels=%d", levels), func(b *testing.B) { benchTreeCancel(b, levels) })
	}
}

func benchTreeCancel(b *testing.B, levels int) {
	d := kerntest.DB(b)
	srv, model := kerntest.Model(b)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(req.LastUserMessage(), "hang") {
			return fakellm.Reply{Hang: true}
		}
		return fakellm.Reply{Content: "done"}
	})
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(b, d, agent.WorkerConfig{MaxConcurrentRuns: 10}, a)
	ctx := kerntest.Context(b, 10*time.Minute)
	var toClosed, toReturn []time.Duration
	for i := 0; i < b.N; i++ {
		ids := []string{fmt.Sprintf("root-%d", i), fmt.Sprintf("child-%d", i), fmt.Sprintf("grandchild-%d", i)}[:levels]
		for level, id := range ids {
			parent := ""
			if level > 0 {
				parent = ids[level-1]
			}
			if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: a.Name, Input: "hang " + id, Enqueue: true, ParentRunID: parent}); err != nil {
				b.Fatal(err)
			}
		}
		if err := srv.WaitRequests(ctx, levels*(i+1)); err != nil {
			b.Fatal(err)
		}
		var seqs []int
		for _, r := range srv.Requests() {
			if slices.Contains(ids, strings.TrimPrefix(r.LastUserMessage(), "hang ")) {
				seqs = append(seqs, r.Seq)
			}
		}
		start := time.Now()
		if ok, err := a.CancelRun(ctx, ids[0]); err != nil || !ok {
			b.Fatalf("cancel: %v, %v", ok, err)
		}
		toReturn = append(toReturn, time.Since(start))
		var last time.Time
		for _, seq := range seqs {
			req, err := srv.WaitClientGone(ctx, seq)
			if err != nil {
				b.Fatal(err)
			}
			if req.ClientGoneAt.After(last) {
				last = req.ClientGoneAt
			}
		}
		toClosed = append(toClosed, last.Sub(start))
	}
	report := func(ds []time.Duration, name string) {
		slices.Sort(ds)
		pct := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
		b.ReportMetric(float64(pct(0.50).Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(pct(0.99).Microseconds())/1000, name+"-p99-ms")
	}
	report(toClosed, "last-stream-closed")
	report(toReturn, "cancel-returned")
}
