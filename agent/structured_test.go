package agent_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

var citySchema = map[string]any{
	"type":                 "object",
	"properties":           map[string]any{"city": map[string]any{"type": "string"}, "population": map[string]any{"type": "integer"}},
	"required":             []any{"city", "population"},
	"additionalProperties": false,
}

func structuredEnv(t *testing.T, answers ...string) (*agent.Agent, *fakellm.Server) {
	t.Helper()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "structured", Model: model, DB: d, OutputSchema: citySchema}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		n := 0 // earlier answers in this conversation
		for _, m := range req.Messages {
			if m.Role == "assistant" {
				n++
			}
		}
		return fakellm.Reply{Content: answers[min(n, len(answers)-1)]}
	})
	return a, srv
}

func runStructured(t *testing.T, a *agent.Agent) *run.Output {
	t.Helper()
	out, err := a.Run(kerntest.Context(t, 30*time.Second), "Biggest city of France?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	return mustWait(t, a, out.RunID)
}

func TestStructuredOutputValid(t *testing.T) {
	t.Parallel()
	a, srv := structuredEnv(t, `{"city": "Paris", "population": 2102650}`)
	out := runStructured(t, a)
	if out.Status != run.StatusCompleted || out.Content != `{"city": "Paris", "population": 2102650}` || srv.Count() != 1 {
		t.Fatalf("run %+v after %d requests", out, srv.Count())
	}
	if req := srv.Requests()[0]; req.OutputFormat == "" {
		t.Fatalf("the request asked for no structured output: %+v", req)
	}
}

// An invalid answer goes back to the model once, with what is wrong; the
// run ends with the corrected answer alone as its content, and the
// rejected one stays in the transcript with its output.rejected event.
func TestStructuredOutputInvalidThenFixed(t *testing.T) {
	t.Parallel()
	a, srv := structuredEnv(t, `{"city": "Paris", "population": "about two million"}`, `{"city": "Paris", "population": 2102650}`)
	out := runStructured(t, a)
	if out.Status != run.StatusCompleted || out.Content != `{"city": "Paris", "population": 2102650}` {
		t.Fatalf("run %+v", out)
	}
	if srv.Count() != 2 || out.Metrics.ModelTurns != 2 {
		t.Fatalf("%d requests, metrics %+v; want 2", srv.Count(), out.Metrics)
	}
	second := srv.Requests()[1].Messages
	last := second[len(second)-1]
	if last.Role != "user" || !strings.Contains(last.Content, "/population") || !strings.Contains(last.Content, "JSON schema") {
		t.Fatalf("the retry said %+v", last)
	}
	msgs, err := a.DB.Messages(kerntest.Context(t, 10*time.Second), out.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if roles(msgs) != "user,assistant,assistant" || !strings.Contains(msgs[1].Content, "about two million") {
		t.Fatalf("transcript %+v", msgs)
	}
	var rejected int
	for ev, err := range a.Events(kerntest.Context(t, 10*time.Second), out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventOutputRejected {
			rejected++
		}
	}
	if rejected != 1 {
		t.Fatalf("%d output.rejected events, want 1", rejected)
	}
}

func TestStructuredOutputInvalidTwice(t *testing.T) {
	t.Parallel()
	a, srv := structuredEnv(t, `Paris, of course.`)
	out := runStructured(t, a)
	if out.Status != run.StatusError || !strings.Contains(out.Error, "structured output invalid after 2 answers") || srv.Count() != 2 {
		t.Fatalf("run %+v after %d requests", out, srv.Count())
	}
}

func TestOutputSchemaThatDoesNotCompileIsRefused(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "bad", Model: model, DB: d, OutputSchema: map[string]any{"type": "no-such-type"}}
	_, err := a.Run(kerntest.Context(t, 10*time.Second), "x", agent.Background(true))
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
	if _, err := agent.NewWorker(d, agent.WorkerConfig{}, a); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("NewWorker: %v, want ErrInvalidArgument", err)
	}
}

// A retry after a rejected answer resumes from the transcript: the model is
// not asked for the rejected answer again, and the next attempt's request
// carries it and the correction, rebuilt from the stored step.
func TestStructuredOutputRejectionSurvivesARetry(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "structured", Model: model, DB: d, OutputSchema: citySchema}
	kerntest.Worker(t, d, agent.WorkerConfig{RetryBaseDelay: time.Millisecond}, a)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		switch req.Seq {
		case 1:
			return fakellm.Reply{Content: `{"city": "Paris"}`} // population missing
		case 2:
			return fakellm.Reply{Status: 500} // the correction's turn fails: retried
		}
		return fakellm.Reply{Content: `{"city": "Paris", "population": 2102650}`}
	})
	out := runStructured(t, a)
	if out.Status != run.StatusCompleted || out.Content != `{"city": "Paris", "population": 2102650}` || out.Attempt != 2 {
		t.Fatalf("run %+v", out)
	}
	if srv.Count() != 3 {
		t.Fatalf("%d model requests, want 3: the rejected answer must not be asked for again", srv.Count())
	}
	third := srv.Requests()[2].Messages
	if len(third) != 3 || third[1].Content != `{"city": "Paris"}` || !strings.Contains(third[2].Content, "population") {
		t.Fatalf("the retry's request sent %+v", third)
	}
}
