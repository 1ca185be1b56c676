package agent_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func TestModelBadRequestEndsAsError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Status: 400, ErrorMessage: "This model's maximum context length is 8192 tokens"}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "too long", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusError {
		t.Fatalf("status %s, want error", final.Status)
	}
	if !strings.Contains(final.Error, "400") || !strings.Contains(final.Error, "maximum context length") {
		t.Fatalf("Error %q should name the HTTP status and the provider's message", final.Error)
	}
	if n := e.model.Count(); n != 1 {
		t.Fatalf("model called %d times, want 1", n)
	}
}

func TestTruncatedStreamIsNotCompleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{MaxAttempts: 2, RetryBaseDelay: time.Millisecond})
	full := fakellm.LoremWords(50)
	e.model.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: full, CutAfter: 10}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "cut me", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusError || !strings.Contains(final.Error, "ended before") || !strings.HasPrefix(full, final.Content) || final.Content == full {
		t.Fatalf("truncated stream gave %s %q (content %q)", final.Status, final.Error, final.Content)
	}
	if n := e.model.Count(); n != 2 {
		t.Fatalf("a truncated stream is retryable: %d model calls, want 2", n)
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, agent.WorkerConfig{})
	e.model.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Hang: true} })
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "hang", agent.Background(true), agent.WithTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, e.agent, out.RunID)
	if final.Status != run.StatusError || !strings.Contains(final.Error, "timed out after 300ms") {
		t.Fatalf("timed-out run: %s %q", final.Status, final.Error)
	}
	if _, err := e.model.WaitClientGone(ctx, 1); err != nil {
		t.Fatalf("the hung model call was not abandoned: %v", err)
	}
	if ok, err := e.agent.CancelRun(ctx, out.RunID); err != nil || ok {
		t.Fatalf("CancelRun after a timeout = %v, %v; want false", ok, err)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	ctx := kerntest.Context(t, 30*time.Second)
	good := &agent.Agent{Name: "a", Model: model, DB: d}
	if _, err := good.Run(ctx, "first", agent.Background(true), agent.WithRunID("taken")); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		agent  *agent.Agent
		prompt string
		opts   []agent.RunOption
		want   error
	}{
		{"empty prompt", good, "", nil, run.ErrInvalidArgument},
		{"blank prompt", good, " \n\t", nil, run.ErrInvalidArgument},
		{"no DB", &agent.Agent{Name: "a", Model: model}, "hi", nil, run.ErrInvalidArgument},
		{"no Model", &agent.Agent{Name: "a", DB: d}, "hi", nil, run.ErrInvalidArgument},
		{"no Name", &agent.Agent{Model: model, DB: d}, "hi", nil, run.ErrInvalidArgument},
		{"bad run id", good, "hi", []agent.RunOption{agent.WithRunID("a\nb")}, run.ErrInvalidArgument},
		{"negative timeout", good, "hi", []agent.RunOption{agent.WithTimeout(-1)}, run.ErrInvalidArgument},
		{"webhook URL that is not http(s)", good, "hi", []agent.RunOption{agent.Background(true), agent.WithWebhook("ftp://127.0.0.1/")}, run.ErrInvalidArgument},
		{"empty run id", good, "hi", []agent.RunOption{agent.WithRunID("")}, run.ErrInvalidArgument},
		{"metadata too large", good, "hi", []agent.RunOption{agent.WithMetadata(map[string]any{"blob": strings.Repeat("x", 2<<20)})}, run.ErrInvalidArgument},
		{"tool without Call", &agent.Agent{Name: "a", Model: model, DB: d, Tools: []agent.Tool{{Name: "t"}}}, "hi", nil, run.ErrInvalidArgument},
		{"tool without Name", &agent.Agent{Name: "a", Model: model, DB: d, Tools: []agent.Tool{{Call: okTool}}}, "hi", nil, run.ErrInvalidArgument},
		{"tool name with a space", &agent.Agent{Name: "a", Model: model, DB: d, Tools: []agent.Tool{{Name: "get weather", Call: okTool}}}, "hi", nil, run.ErrInvalidArgument},
		{"two tools of one name", &agent.Agent{Name: "a", Model: model, DB: d, Tools: []agent.Tool{{Name: "t", Call: okTool}, {Name: "t", Call: okTool}}}, "hi", nil, run.ErrInvalidArgument},
		{"tool parameters not JSON", &agent.Agent{Name: "a", Model: model, DB: d, Tools: []agent.Tool{{Name: "t", Call: okTool, Parameters: map[string]any{"f": func() {}}}}}, "hi", nil, run.ErrInvalidArgument},
		{"negative HistoryRuns", &agent.Agent{Name: "a", Model: model, DB: d, HistoryRuns: -1}, "hi", nil, run.ErrInvalidArgument},
		{"HistoryRuns over the bound", &agent.Agent{Name: "a", Model: model, DB: d, HistoryRuns: 101}, "hi", nil, run.ErrInvalidArgument},
		{"OutputSchema that does not compile", &agent.Agent{Name: "a", Model: model, DB: d, OutputSchema: map[string]any{"type": 7}}, "hi", nil, run.ErrInvalidArgument},
		{"negative max steps", &agent.Agent{Name: "a", Model: model, DB: d, MaxSteps: -1}, "hi", nil, run.ErrInvalidArgument},
		{"duplicate id", good, "second", []agent.RunOption{agent.WithRunID("taken")}, run.ErrAlreadyExists},
	}
	for _, tc := range cases {
		for _, bg := range []bool{true, false} {
			opts := append([]agent.RunOption{agent.Background(bg)}, tc.opts...)
			if _, err := tc.agent.Run(ctx, tc.prompt, opts...); !errors.Is(err, tc.want) {
				t.Errorf("%s (background %v): err = %v, want %v", tc.name, bg, err, tc.want)
			}
		}
	}
	var runs, jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM kern_run), (SELECT count(*) FROM river_job)`).Scan(&runs, &jobs); err != nil {
		t.Fatal(err)
	}
	if runs != 1 || jobs != 1 {
		t.Fatalf("bad calls left %d runs and %d jobs, want only the first run and its job", runs, jobs)
	}
	first, _ := good.GetRunOutput(ctx, "taken")
	if first.Input != "first" {
		t.Fatalf("duplicate id changed the first run: %+v", first)
	}
}

func TestNewWorkerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "a", Model: model}
	cases := map[string]func() (*agent.Worker, error){
		"nil db":          func() (*agent.Worker, error) { return agent.NewWorker(nil, agent.WorkerConfig{}, a) },
		"no agents":       func() (*agent.Worker, error) { return agent.NewWorker(d, agent.WorkerConfig{}) },
		"duplicate names": func() (*agent.Worker, error) { return agent.NewWorker(d, agent.WorkerConfig{}, a, a) },
		"agent no model": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{}, &agent.Agent{Name: "b"})
		},
		"negative": func() (*agent.Worker, error) { return agent.NewWorker(d, agent.WorkerConfig{MaxConcurrentRuns: -1}, a) },
		"negative MaxRunsPerKey": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{MaxRunsPerKey: -1}, a)
		},
		"WebhookSecret whsec_ but not base64": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{WebhookSecret: "whsec_not*base64"}, a)
		},
		"agent with a tool without Call": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{}, &agent.Agent{Name: "b", Model: model, Tools: []agent.Tool{{Name: "t"}}})
		},
		"agent with two tools of one name": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{}, &agent.Agent{Name: "b", Model: model,
				Tools: []agent.Tool{{Name: "t", Call: okTool}, {Name: "t", Call: okTool}}})
		},
		"agent with negative MaxSteps": func() (*agent.Worker, error) {
			return agent.NewWorker(d, agent.WorkerConfig{}, &agent.Agent{Name: "b", Model: model, MaxSteps: -2})
		},
	}
	for name, mk := range cases {
		if w, err := mk(); !errors.Is(err, run.ErrInvalidArgument) || w != nil {
			t.Errorf("%s: worker %v err %v, want run.ErrInvalidArgument", name, w, err)
		}
	}
}

func TestForegroundRun(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "fg", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := a.Run(ctx, "What is the capital of France?", agent.WithSessionID("s"), agent.WithName("q"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != run.StatusCompleted || out.Content != "The capital of France is Paris." || out.Attempt != 1 {
		t.Fatalf("foreground run: %+v", out)
	}
	stored, err := a.GetRunOutput(ctx, out.RunID)
	if err != nil || stored.Status != run.StatusCompleted || stored.Content != out.Content || stored.SessionID != "s" || stored.Name != "q" {
		t.Fatalf("stored foreground run: %+v, %v", stored, err)
	}
	if srv.Count() != 1 {
		t.Fatalf("model calls: %d", srv.Count())
	}
}

func TestForegroundRunCancelledFromElsewhere(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	srv.Script(func(fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: fakellm.LoremWords(1000), Drip: 5 * time.Millisecond}
	})
	a := &agent.Agent{Name: "fg", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)

	type result struct {
		out *run.Output
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := a.Run(ctx, "long", agent.WithRunID("fg-1"))
		done <- result{out, err}
	}()
	if err := srv.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	other, err := a.DB.CancelRun(ctx, "fg-1") // as another process would
	if err != nil || !other {
		t.Fatalf("CancelRun = %v, %v", other, err)
	}
	r := <-done
	if r.err != nil || r.out.Status != run.StatusCancelled {
		t.Fatalf("foreground run after cancel: %+v, %v", r.out, r.err)
	}
	if _, err := srv.WaitClientGone(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestForegroundRunEndsWhenCallerGoesAway(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	srv.Script(func(fakellm.Request) fakellm.Reply { return fakellm.Reply{Hang: true} })
	a := &agent.Agent{Name: "fg", Model: model, DB: d}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_ = srv.WaitRequests(context.Background(), 1)
		cancel()
	}()
	out, err := a.Run(ctx, "hang", agent.WithRunID("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != run.StatusCancelled {
		t.Fatalf("status %s, want cancelled", out.Status)
	}
}

// Errors read once: one "kern:" prefix, the sentinel's words once, and no
// SQL or constraint names.
func TestErrorsReadOnce(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "a", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)
	if _, err := a.Run(ctx, "first", agent.Background(true), agent.WithRunID("taken")); err != nil {
		t.Fatal(err)
	}
	eventsErr := func(id string, after int64) error {
		for _, err := range a.Events(ctx, id, after) {
			return err
		}
		return nil
	}
	_, getErr := a.GetRunOutput(ctx, "missing")
	_, dupErr := a.Run(ctx, "again", agent.Background(true), agent.WithRunID("taken"))
	_, emptyErr := a.Run(ctx, "", agent.Background(true))
	_, badIDErr := a.GetRunOutput(ctx, "a\nb")
	_, waitErr := a.WaitRun(ctx, "missing")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"GetRun of an unknown id", getErr, run.ErrNotFound},
		{"WaitRun of an unknown id", waitErr, run.ErrNotFound},
		{"duplicate run id", dupErr, run.ErrAlreadyExists},
		{"empty prompt", emptyErr, run.ErrInvalidArgument},
		{"malformed id", badIDErr, run.ErrInvalidArgument},
		{"Events of an unknown id", eventsErr("missing", 0), run.ErrNotFound},
		{"Events after a negative seq", eventsErr("taken", -1), run.ErrInvalidArgument},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
			continue
		}
		msg := tc.err.Error()
		if !strings.HasPrefix(msg, "kern: ") || strings.Count(msg, "kern:") != 1 || strings.Count(msg, tc.want.Error()) != 1 {
			t.Errorf("%s: %q does not read once", tc.name, msg)
		}
		for _, leak := range []string{"SQLSTATE", "constraint", "duplicate key", "kern_run"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: %q shows %q", tc.name, msg, leak)
			}
		}
	}
}
