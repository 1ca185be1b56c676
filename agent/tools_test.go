package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func okTool(context.Context, json.RawMessage) (string, error) { return "ok", nil }

// modelFactory starts a fake model server and returns it with a Model that
// talks to it: kerntest.Model (OpenAIChat) or responsesModel.
type modelFactory func(testing.TB) (*fakellm.Server, agent.Model)

// toolEnv is newEnv for an agent with tools, through OpenAIChat.
func toolEnv(t *testing.T, cfg agent.WorkerConfig, maxSteps int, tools ...agent.Tool) *env {
	t.Helper()
	return toolEnvOn(t, kerntest.Model, cfg, maxSteps, tools...)
}

// toolEnvOn is toolEnv through the model newModel makes.
func toolEnvOn(t *testing.T, newModel modelFactory, cfg agent.WorkerConfig, maxSteps int, tools ...agent.Tool) *env {
	t.Helper()
	d := kerntest.DB(t)
	srv, model := newModel(t)
	a := &agent.Agent{Name: "tooler", Instructions: "Use the tools.", Model: model, DB: d, Tools: tools, MaxSteps: maxSteps}
	kerntest.Worker(t, d, cfg, a)
	return &env{db: d, model: srv, agent: a}
}

// toolMessages counts the tool results a request carries: how far into
// the loop the model is.
func toolMessages(req fakellm.Request) int {
	n := 0
	for _, m := range req.Messages {
		if m.Role == "tool" {
			n++
		}
	}
	return n
}

// byStep answers a request with steps[n], n the number of tool results it
// carries, and with the last step from then on.
func byStep(steps ...fakellm.Reply) func(fakellm.Request) fakellm.Reply {
	return func(req fakellm.Request) fakellm.Reply { return steps[min(toolMessages(req), len(steps)-1)] }
}

func runTool(t *testing.T, e *env, prompt string) *run.Output {
	t.Helper()
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, prompt, agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	return mustWait(t, e.agent, out.RunID)
}

func messages(t *testing.T, e *env, runID string) []run.Message {
	t.Helper()
	msgs, err := e.db.Messages(kerntest.Context(t, 10*time.Second), runID)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if m.Seq != i+1 || m.At.IsZero() {
			t.Fatalf("message %d: seq %d, at %v; want seqs 1, 2, 3 … and a time", i, m.Seq, m.At)
		}
	}
	return msgs
}

func roles(msgs []run.Message) string {
	r := make([]string, len(msgs))
	for i, m := range msgs {
		r[i] = m.Role
	}
	return strings.Join(r, ",")
}

// checkToolLog is checkLog for a tool run: gap-free seqs, one terminal
// event, every tool.call and tool.result, and the deltas after the last of
// them adding up to the final content.
func checkToolLog(t *testing.T, e *env, final *run.Output, wantCalls int) []run.Event {
	t.Helper()
	events := collect(t, e.agent, final.RunID, 0)
	var content strings.Builder
	calls, results := 0, 0
	for i, ev := range events {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		if ev.Type.Terminal() != (i == len(events)-1) {
			t.Fatalf("terminal event %s at %d of %d", ev.Type, i, len(events))
		}
		switch ev.Type {
		case run.EventContentDelta:
			content.WriteString(deltaText(t, ev))
		case run.EventToolCall, run.EventToolResult:
			var d struct{ ID, Name string }
			if err := json.Unmarshal(ev.Data, &d); err != nil || d.ID == "" || d.Name == "" {
				t.Fatalf("%s data %s: %v", ev.Type, ev.Data, err)
			}
			if ev.Type == run.EventToolCall {
				calls++
			} else {
				results++
			}
			content.Reset() // the turn's text is in the transcript; the next turn starts afresh
		case run.EventRunStarted, run.EventRunRetrying, run.EventRunReleased:
			content.Reset()
		}
	}
	if calls != wantCalls || results != wantCalls {
		t.Fatalf("%d tool.call and %d tool.result events, want %d each", calls, results, wantCalls)
	}
	if content.String() != final.Content {
		t.Fatalf("deltas after the last step add up to %q, content is %q", content.String(), final.Content)
	}
	return events
}

func TestToolOneCall(t *testing.T) {
	t.Parallel()
	var gotArgs, gotID atomic.Value
	var calls atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{
		Name: "get_weather", Description: "The weather in a city.",
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		Call: func(ctx context.Context, args json.RawMessage) (string, error) {
			calls.Add(1)
			gotArgs.Store(string(args))
			gotID.Store(agent.ToolCallID(ctx))
			return "18C and sunny", nil
		},
	})
	e.model.Script(byStep(
		fakellm.Reply{Content: "Let me look that up. ", ToolCalls: []fakellm.ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		fakellm.Reply{Content: "It is 18C and sunny in Paris."},
	))
	final := runTool(t, e, "What is the weather in Paris?")
	if final.Status != run.StatusCompleted || final.Content != "It is 18C and sunny in Paris." {
		t.Fatalf("run: %+v", final)
	}
	if calls.Load() != 1 || gotArgs.Load() != `{"city":"Paris"}` {
		t.Fatalf("tool called %d times with %v", calls.Load(), gotArgs.Load())
	}
	reqs := e.model.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests, want 2", len(reqs))
	}
	if !slices.Equal(reqs[0].Tools, []string{"get_weather"}) {
		t.Fatalf("tools offered: %v", reqs[0].Tools)
	}
	second := reqs[1].Messages
	asked := second[len(second)-2]
	result := second[len(second)-1]
	if asked.Role != "assistant" || len(asked.ToolCalls) != 1 || asked.Content != "Let me look that up. " ||
		result.Role != "tool" || result.Content != "18C and sunny" || result.ToolCallID != asked.ToolCalls[0].ID {
		t.Fatalf("second request ends with %+v, %+v", asked, result)
	}
	if want := final.RunID + "/" + asked.ToolCalls[0].ID; gotID.Load() != want {
		t.Fatalf("ToolCallID %v, want %q", gotID.Load(), want)
	}
	m := final.Metrics
	if m.ModelTurns != 2 || m.ToolCalls != 1 || m.InputTokens != reqs[0].PromptTokens+reqs[1].PromptTokens ||
		m.OutputTokens == 0 || m.TotalTokens != m.InputTokens+m.OutputTokens {
		t.Fatalf("metrics %+v (prompt tokens %d + %d)", m, reqs[0].PromptTokens, reqs[1].PromptTokens)
	}

	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,assistant" {
		t.Fatalf("transcript roles %s", roles(msgs))
	}
	if msgs[0].Content != "What is the weather in Paris?" || msgs[1].Content != "Let me look that up. " ||
		len(msgs[1].ToolCalls) != 1 || msgs[1].ToolCalls[0] != (run.ToolCall{ID: asked.ToolCalls[0].ID, Name: "get_weather", Arguments: `{"city":"Paris"}`}) ||
		msgs[2].ToolCallID != asked.ToolCalls[0].ID || msgs[2].Content != "18C and sunny" || msgs[3].Content != final.Content {
		t.Fatalf("transcript %+v", msgs)
	}
	checkToolLog(t, e, final, 1)
}

// Two calls of one turn run at once (each waits for the other to start),
// and finish in the opposite order; the model reads the results in the
// order it asked.
func TestToolParallelCallsOfOneTurn(t *testing.T) {
	t.Parallel()
	var started sync.WaitGroup
	started.Add(2)
	bothStarted := make(chan struct{})
	go func() { started.Wait(); close(bothStarted) }()
	var e *env
	call := func(name string) func(context.Context, json.RawMessage) (string, error) {
		return func(ctx context.Context, _ json.RawMessage) (string, error) {
			started.Done()
			select {
			case <-bothStarted:
			case <-time.After(10 * time.Second):
				return "", errors.New("the other call never started: calls are not concurrent")
			}
			if name == "slow" {
				// Return only once the fast call's result is committed, so
				// the two results commit in a known order.
				runID, _, _ := strings.Cut(agent.ToolCallID(ctx), "/")
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
					var n int
					if err := e.db.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_step WHERE run_id = $1 AND role = 'tool'`, runID).Scan(&n); err != nil {
						return "", err
					}
					if n > 0 {
						break
					}
					if time.Now().After(deadline) {
						return "", errors.New("the fast call's result was never stored")
					}
				}
			}
			return name + " result", nil
		}
	}
	e = toolEnv(t, agent.WorkerConfig{}, 0,
		agent.Tool{Name: "slow", Call: call("slow")}, agent.Tool{Name: "fast", Call: call("fast")})
	e.model.Script(byStep(
		fakellm.Reply{ToolCalls: []fakellm.ToolCall{{Name: "slow", Arguments: `{}`}, {Name: "fast", Arguments: `{}`}}},
		fakellm.Reply{Content: "Both done."},
	))
	final := runTool(t, e, "do both")
	if final.Status != run.StatusCompleted || final.Content != "Both done." {
		t.Fatalf("run: %+v", final)
	}
	reqs := e.model.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	got := reqs[1].Messages[len(reqs[1].Messages)-2:]
	asked := reqs[1].Messages[len(reqs[1].Messages)-3].ToolCalls
	if got[0].Content != "slow result" || got[1].Content != "fast result" ||
		got[0].ToolCallID != asked[0].ID || got[1].ToolCallID != asked[1].ID {
		t.Fatalf("results sent back as %+v for calls %+v", got, asked)
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,tool,assistant" || msgs[2].Content != "slow result" || msgs[3].Content != "fast result" {
		t.Fatalf("transcript %+v", msgs)
	}
	// The events are in commit order: the fast result first.
	var order []string
	for _, ev := range checkToolLog(t, e, final, 2) {
		if ev.Type == run.EventToolResult {
			var d struct{ Output string }
			_ = json.Unmarshal(ev.Data, &d)
			order = append(order, d.Output)
		}
	}
	if !slices.Equal(order, []string{"fast result", "slow result"}) {
		t.Fatalf("tool.result events in order %v", order)
	}
}

func TestToolThreeStepPlan(t *testing.T) {
	t.Parallel()
	var seen []string
	var mu sync.Mutex
	step := func(ctx context.Context, args json.RawMessage) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(args))
		return "done " + string(args), nil
	}
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{Name: "step", Call: step})
	e.model.Script(byStep(
		fakellm.Reply{Content: "First, step one.", ToolCalls: []fakellm.ToolCall{{Name: "step", Arguments: `{"n":1}`}}},
		fakellm.Reply{Content: "Now step two.", ToolCalls: []fakellm.ToolCall{{Name: "step", Arguments: `{"n":2}`}}},
		fakellm.Reply{Content: "All steps are done."},
	))
	final := runTool(t, e, "plan it")
	if final.Status != run.StatusCompleted || final.Content != "All steps are done." {
		t.Fatalf("run: %+v", final)
	}
	if !slices.Equal(seen, []string{`{"n":1}`, `{"n":2}`}) || e.model.Count() != 3 {
		t.Fatalf("tool calls %v, model requests %d", seen, e.model.Count())
	}
	if m := final.Metrics; m.ModelTurns != 3 || m.ToolCalls != 2 {
		t.Fatalf("metrics %+v", m)
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,assistant,tool,assistant" ||
		msgs[1].Content != "First, step one." || msgs[3].Content != "Now step two." || msgs[4].Content != `done {"n":2}` {
		t.Fatalf("transcript %+v", msgs)
	}
	// The last request carries the whole conversation.
	last := e.model.Requests()[2].Messages
	if len(last) != 6 || last[0].Role != "system" || last[1].Role != "user" || last[5].Content != `done {"n":2}` {
		t.Fatalf("last request's messages %+v", last)
	}
	checkToolLog(t, e, final, 2)
}

func TestToolMaxSteps(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	e := toolEnv(t, agent.WorkerConfig{}, 3, agent.Tool{Name: "again", Call: func(context.Context, json.RawMessage) (string, error) {
		calls.Add(1)
		return "once more", nil
	}})
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: "Looping.", ToolCalls: []fakellm.ToolCall{{Name: "again", Arguments: `{}`}}}
	})
	final := runTool(t, e, "loop forever")
	if final.Status != run.StatusError || final.Error != "max steps (3) reached" {
		t.Fatalf("run: %+v", final)
	}
	// The third turn's call is not made: no turn could read its result.
	if e.model.Count() != 3 || calls.Load() != 2 {
		t.Fatalf("%d model requests and %d tool calls, want 3 and 2", e.model.Count(), calls.Load())
	}
	if m := final.Metrics; m.ModelTurns != 3 || m.ToolCalls != 3 || m.InputTokens == 0 {
		t.Fatalf("metrics %+v", m)
	}
	if msgs := messages(t, e, final.RunID); roles(msgs) != "user,assistant,tool,assistant,tool,assistant" || len(msgs[5].ToolCalls) != 1 {
		t.Fatalf("transcript kept as %s", roles(msgs))
	}
}

// CancelRun during a tool call: the tool's ctx is done at once, the run
// ends cancelled promptly, and the transcript so far is kept.
func TestToolCancelDuringCall(t *testing.T) {
	t.Parallel()
	testToolCancelDuringCall(t, kerntest.Model)
}

func testToolCancelDuringCall(t *testing.T, newModel modelFactory) *env {
	inTool := make(chan struct{})
	sawDone := make(chan error, 1)
	e := toolEnvOn(t, newModel, agent.WorkerConfig{}, 0, agent.Tool{Name: "wait", Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
		close(inTool)
		select {
		case <-ctx.Done():
			sawDone <- ctx.Err()
			return "", ctx.Err()
		case <-time.After(time.Minute):
			sawDone <- errors.New("ctx not done a minute after the cancel")
			return "too late", nil
		}
	}})
	e.model.Script(byStep(
		fakellm.Reply{Content: "Waiting for it.", ToolCalls: []fakellm.ToolCall{{Name: "wait", Arguments: `{}`}}},
		fakellm.Reply{Content: "never asked"},
	))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "wait for it", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inTool:
	case <-ctx.Done():
		t.Fatal("the tool was never called")
	}
	cancelled := time.Now()
	if ok, err := e.agent.CancelRun(ctx, out.RunID); !ok || err != nil {
		t.Fatalf("CancelRun = %v, %v", ok, err)
	}
	select {
	case err := <-sawDone:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("tool: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the tool's ctx was never done")
	}
	if took := time.Since(cancelled); took > 5*time.Second {
		t.Fatalf("the tool saw the cancel after %v", took)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusCancelled {
		t.Fatalf("run: %+v", final)
	}
	if took := time.Since(cancelled); took > 10*time.Second {
		t.Fatalf("the run ended cancelled %v after the cancel", took)
	}
	if e.model.Count() != 1 {
		t.Fatalf("%d model requests after the cancel, want 1", e.model.Count())
	}
	msgs := messages(t, e, out.RunID)
	if roles(msgs) != "user,assistant" || msgs[1].Content != "Waiting for it." || len(msgs[1].ToolCalls) != 1 {
		t.Fatalf("transcript %+v", msgs)
	}
	return e
}

// A retryable failure of the second model turn (HTTP 500, once): the
// retry resumes from the transcript. The first turn is not asked again and
// the tool, which returned, is not called again.
func TestToolRunRetryResumesFromTranscript(t *testing.T) {
	t.Parallel()
	testToolRunRetryResumesFromTranscript(t, kerntest.Model)
}

func testToolRunRetryResumesFromTranscript(t *testing.T, newModel modelFactory) *env {
	var calls atomic.Int32
	var ids sync.Map
	e := toolEnvOn(t, newModel, agent.WorkerConfig{RetryBaseDelay: 10 * time.Millisecond}, 0, agent.Tool{Name: "charge", Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
		calls.Add(1)
		ids.Store(agent.ToolCallID(ctx), true)
		return "charged", nil
	}})
	var failed atomic.Bool
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		switch {
		case toolMessages(req) == 0:
			return fakellm.Reply{Content: "Charging.", ToolCalls: []fakellm.ToolCall{{Name: "charge", Arguments: `{"cents":100}`}}}
		case failed.CompareAndSwap(false, true):
			return fakellm.Reply{Status: 500, ErrorMessage: "overloaded"}
		}
		return fakellm.Reply{Content: "You were charged once."}
	})
	final := runTool(t, e, "charge me")
	if final.Status != run.StatusCompleted || final.Content != "You were charged once." || final.Attempt != 2 {
		t.Fatalf("run: %+v", final)
	}
	if calls.Load() != 1 {
		t.Fatalf("tool called %d times, want exactly once", calls.Load())
	}
	reqs := e.model.Requests()
	first := 0
	for _, r := range reqs {
		if toolMessages(r) == 0 {
			first++
		}
	}
	if len(reqs) != 3 || first != 1 {
		t.Fatalf("%d model requests, %d of them the first turn; want 3 and 1", len(reqs), first)
	}
	if m := final.Metrics; m.ModelTurns != 2 || m.ToolCalls != 1 {
		t.Fatalf("metrics %+v", m)
	}
	types := eventTypes(t, e.agent, final.RunID)
	if !slices.Contains(types, run.EventRunRetrying) || slices.Index(types, run.EventToolResult) > slices.Index(types, run.EventRunRetrying) {
		t.Fatalf("events %v", types)
	}
	if msgs := messages(t, e, final.RunID); roles(msgs) != "user,assistant,tool,assistant" {
		t.Fatalf("transcript %s", roles(msgs))
	}
	checkToolLog(t, e, final, 1)
	return e
}

// A plain run reads as the prompt and the answer; an unknown run is
// run.ErrNotFound.
func TestMessagesOfPlainAndUnknownRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	final := runTool(t, e, "What is the capital of France?")
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant" || msgs[1].Content != "The capital of France is Paris." {
		t.Fatalf("transcript %+v", msgs)
	}
	if m := final.Metrics; m.ModelTurns != 1 || m.ToolCalls != 0 {
		t.Fatalf("metrics %+v", m)
	}
	if _, err := e.db.Messages(kerntest.Context(t, 10*time.Second), "no-such-run"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("Messages of an unknown run: %v", err)
	}
}

// A model that numbers its calls per turn reuses ids; ToolCallID must still
// tell the calls apart, so a repeated id is replaced, and stored.
func TestToolRepeatedCallIDsAreMadeUnique(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var keys []string
	e := toolEnv(t, agent.WorkerConfig{}, 0, agent.Tool{Name: "step", Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, agent.ToolCallID(ctx))
		return "ok", nil
	}})
	again := fakellm.Reply{ToolCalls: []fakellm.ToolCall{{ID: "call_0", Name: "step", Arguments: `{}`}}}
	e.model.Script(byStep(again, again, fakellm.Reply{Content: "Done."}))
	final := runTool(t, e, "twice")
	if final.Status != run.StatusCompleted || len(keys) != 2 || keys[0] == keys[1] || keys[0] != final.RunID+"/call_0" {
		t.Fatalf("run %s, tool call keys %v", final.Status, keys)
	}
	msgs := messages(t, e, final.RunID)
	if roles(msgs) != "user,assistant,tool,assistant,tool,assistant" || keys[1] != final.RunID+"/"+msgs[3].ToolCalls[0].ID || msgs[4].ToolCallID != msgs[3].ToolCalls[0].ID {
		t.Fatalf("transcript %+v, keys %v", msgs, keys)
	}
}
