package agent_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A content flush whose reply is lost after Postgres committed it (the
// connection dies between the commit and the answer) must not leave the text
// in the run twice: the worker settles the write in doubt before it writes
// anything else. Before seq-fenced appends the stored content of such a
// run read "hello hello world".
func TestContentFlushWithLostReplyIsStoredOnce(t *testing.T) {
	t.Parallel()
	d, proxy := kerntest.ProxiedDB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{FlushInterval: time.Millisecond, FlushBytes: 1 << 20}, a)
	ctx := kerntest.Context(t, 60*time.Second)
	const prompt = "[fake:words=60,drip=3ms]"

	clean, err := a.Run(ctx, prompt, agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	want := mustWait(t, a, clean.RunID)

	cut := proxy.CutAfterCommit("req_delta")
	out, err := a.Run(ctx, prompt, agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	got := mustWait(t, a, out.RunID)
	select {
	case <-cut:
	default:
		t.Fatal("no content flush was cut: the test did not exercise a lost reply")
	}
	if got.Status != run.StatusCompleted || got.Content != want.Content {
		t.Fatalf("run after a lost flush reply: status %s, content\n%q\nwant\n%q", got.Status, got.Content, want.Content)
	}
	var sum strings.Builder
	for ev, err := range a.Events(ctx, out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventContentDelta {
			var data struct{ Delta string }
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatal(err)
			}
			sum.WriteString(data.Delta)
		}
	}
	if sum.String() != got.Content {
		t.Fatalf("deltas add up to %q, content is %q", sum.String(), got.Content)
	}
}
