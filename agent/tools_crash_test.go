package agent_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A worker process is SIGKILLed after its tool returned, while the next
// model turn streams. The rescued run completes elsewhere from the stored
// transcript: the tool was called exactly once (counted in a table, which
// survives the process) and the finished first turn was not asked again
// (counted at the model).
func TestKilledWorkerProcessToolRunResumesFromTranscript(t *testing.T) {
	t.Parallel()
	const rescueAfter = 2 * time.Second
	dbURL := kerntest.DatabaseURL(t)
	submitter := submitterOn(t, dbURL)
	ctx := kerntest.Context(t, time.Minute)
	createToolCallsTable(t, submitter)
	fake, modelURL := kerntest.ModelServer(t)
	var streamedOnce atomic.Bool
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		switch {
		case toolMessages(req) == 0:
			return fakellm.Reply{Content: "Recording. ", ToolCalls: []fakellm.ToolCall{{Name: "record", Arguments: `{"what":"order"}`}}}
		case streamedOnce.CompareAndSwap(false, true):
			return fakellm.Reply{Content: fakellm.LoremWords(1000), Drip: 10 * time.Millisecond} // still streaming when killed
		}
		return fakellm.Reply{Content: "Recorded once."}
	})
	tools := workerToolsEnv + "=1"
	workers := map[string]*workerProcess{
		"w1": startWorkerProcess(t, "w1", dbURL, modelURL, rescueAfter, tools),
		"w2": startWorkerProcess(t, "w2", dbURL, modelURL, rescueAfter, tools),
	}

	out, err := submitter.Run(ctx, "Record the order.", agent.Background(true), agent.WithTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.WaitRequests(ctx, 2); err != nil {
		t.Fatal(err)
	}
	victim := fake.Requests()[1].Model
	waitFor(t, 10*time.Second, "the second turn to stream some content", func() bool {
		got, err := submitter.GetRunOutput(ctx, out.RunID)
		return err == nil && got.Content != ""
	})
	if n := toolCallRows(t, submitter); n != 1 {
		t.Fatalf("before the kill: the tool was called %d times, want 1", n)
	}
	workers[victim].kill()

	final := mustWait(t, submitter, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "Recorded once." || final.Attempt != 2 {
		t.Fatalf("run after its worker was killed: %+v", final)
	}
	if n := toolCallRows(t, submitter); n != 1 {
		t.Fatalf("the tool was called %d times, want exactly once", n)
	}
	reqs := fake.Requests()
	firstTurns := 0
	for _, r := range reqs {
		if toolMessages(r) == 0 {
			firstTurns++
		}
	}
	if len(reqs) != 3 || firstTurns != 1 || reqs[2].Model == victim {
		t.Fatalf("%d model requests (%d of the first turn), the last by %q (victim %q); want 3, 1, another worker",
			len(reqs), firstTurns, reqs[len(reqs)-1].Model, victim)
	}
	last := reqs[2].Messages
	if result := last[len(last)-1]; result.Role != "tool" || result.Content != "recorded" {
		t.Fatalf("the rescuing turn was sent %+v, want the stored tool result", result)
	}

	msgs, err := submitter.DB.Messages(ctx, out.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if roles(msgs) != "user,assistant,tool,assistant" || msgs[1].Content != "Recording. " || msgs[3].Content != "Recorded once." {
		t.Fatalf("transcript %+v", msgs)
	}
	var callID string
	if err := submitter.DB.Pool().QueryRow(ctx, `SELECT call_id FROM test_tool_calls`).Scan(&callID); err != nil {
		t.Fatal(err)
	}
	if want := out.RunID + "/" + msgs[1].ToolCalls[0].ID; callID != want {
		t.Fatalf("ToolCallID %q, want %q", callID, want)
	}
	if m := final.Metrics; m.ModelTurns != 2 || m.ToolCalls != 1 {
		t.Fatalf("metrics %+v", m)
	}
	terminal := 0
	for _, ev := range collect(t, submitter, out.RunID, 0) {
		if ev.Type.Terminal() {
			terminal++
		}
	}
	if terminal != 1 {
		t.Fatalf("%d terminal events, want exactly 1", terminal)
	}
}

func toolCallRows(t *testing.T, a *agent.Agent) int {
	t.Helper()
	var n int
	if err := a.DB.Pool().QueryRow(kerntest.Context(t, 10*time.Second), `SELECT count(*) FROM test_tool_calls`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
