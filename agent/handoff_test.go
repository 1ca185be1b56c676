package agent_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A triage agent hands the run to billing: the same run goes on under
// billing's instructions and model, on a worker that serves billing only,
// with the transcript so far; the run is billing's now, says so in a
// run.handoff event, and used one attempt.
func TestHandoffMovesTheRunToTheOtherAgent(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, url := kerntest.ModelServer(t)
	client := agent.NewOpenAIClient("test-key", url)
	billing := &agent.Agent{Name: "billing", Instructions: "You are billing.", DB: d,
		Model: agent.OpenAIChat{Client: client, ID: "billing-model"}}
	triage := &agent.Agent{Name: "triage", Instructions: "You are triage.", DB: d, Handoffs: []*agent.Agent{billing},
		Model: agent.OpenAIChat{Client: client, ID: "triage-model"}}
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		if req.Model == "triage-model" {
			return fakellm.Reply{Content: "Let me get billing.", ToolCalls: []fakellm.ToolCall{{ID: "t1", Name: "transfer_to_billing", Arguments: "{}"}}}
		}
		return fakellm.Reply{Content: "Billing here: your invoice is paid."}
	})
	kerntest.Worker(t, d, agent.WorkerConfig{}, triage)
	kerntest.Worker(t, d, agent.WorkerConfig{}, billing)
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := triage.Run(ctx, "Was my invoice paid?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, triage, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "Billing here: your invoice is paid." || final.AgentName != "billing" || final.Attempt != 1 {
		t.Fatalf("after the handoff: %s, %q, agent %q, attempt %d: %s", final.Status, final.Content, final.AgentName, final.Attempt, final.Error)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].Model != "triage-model" || reqs[1].Model != "billing-model" {
		t.Fatalf("model requests: %d, want triage's then billing's", len(reqs))
	}
	if !slices.Contains(reqs[0].Tools, "transfer_to_billing") {
		t.Fatalf("triage was offered %v, want transfer_to_billing", reqs[0].Tools)
	}
	b := reqs[1].Messages
	if b[0].Role != "system" || b[0].Content != "You are billing." {
		t.Fatalf("billing's request starts with %+v, want billing's instructions", b[0])
	}
	if last := b[len(b)-1]; last.Role != "tool" || last.Content != "Transferred to billing." {
		t.Fatalf("billing's request ends with %+v, want the transfer's result", last)
	}
	var handoffs []map[string]string
	for ev, err := range d.Events(ctx, out.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventRunHandoff {
			var m map[string]string
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				t.Fatal(err)
			}
			handoffs = append(handoffs, m)
		}
		if ev.Type.Terminal() {
			break
		}
	}
	if len(handoffs) != 1 || handoffs[0]["from"] != "triage" || handoffs[0]["to"] != "billing" {
		t.Fatalf("run.handoff events: %v, want one from triage to billing", handoffs)
	}

	// A foreground run handed off returns billing's answer too: the caller
	// waits for the worker that took it.
	fg, err := triage.Run(ctx, "And the next one?")
	if err != nil {
		t.Fatal(err)
	}
	if fg.Status != run.StatusCompleted || fg.Content != "Billing here: your invoice is paid." || fg.AgentName != "billing" {
		t.Fatalf("foreground run after the handoff: %s, %q, agent %q: %s", fg.Status, fg.Content, fg.AgentName, fg.Error)
	}
}

// Handoffs the loop could not offer are refused when the worker is made.
func TestHandoffsAreValidated(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	self := &agent.Agent{Name: "a", Model: model, DB: d}
	self.Handoffs = []*agent.Agent{self}
	clash := &agent.Agent{Name: "c", Model: model, DB: d, Handoffs: []*agent.Agent{{Name: "b", Model: model}},
		Tools: []agent.Tool{{Name: "transfer_to_b", External: true}}}
	for _, a := range []*agent.Agent{self, clash, {Name: "n", Model: model, DB: d, Handoffs: []*agent.Agent{nil}}} {
		if _, err := agent.NewWorker(d, agent.WorkerConfig{}, a); !errors.Is(err, run.ErrInvalidArgument) {
			t.Errorf("agent %q with handoffs %v: %v; want run.ErrInvalidArgument", a.Name, a.Handoffs, err)
		}
	}
}

// A turn that hands off and also waits for an answer hands off once the
// answer is in: the execution that resumes the run finds the transfer's
// result stored and hands over before asking its model again — the path a
// run takes whose worker died between the stored result and the handoff.
func TestHandoffAfterAnAnswerResumesTheTransfer(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, url := kerntest.ModelServer(t)
	client := agent.NewOpenAIClient("test-key", url)
	billing := &agent.Agent{Name: "billing", Instructions: "You are billing.", DB: d,
		Model: agent.OpenAIChat{Client: client, ID: "billing-model"}}
	triage := &agent.Agent{Name: "triage", Instructions: "You are triage.", DB: d, Handoffs: []*agent.Agent{billing},
		Tools: []agent.Tool{{Name: "lookup", External: true}},
		Model: agent.OpenAIChat{Client: client, ID: "triage-model"}}
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		if req.Model == "triage-model" {
			return fakellm.Reply{ToolCalls: []fakellm.ToolCall{
				{ID: "t1", Name: "transfer_to_billing", Arguments: "{}"}, {ID: "l1", Name: "lookup", Arguments: "{}"}}}
		}
		return fakellm.Reply{Content: "Billing, with the lookup."}
	})
	kerntest.Worker(t, d, agent.WorkerConfig{}, triage, billing)
	ctx := kerntest.Context(t, 30*time.Second)

	out, err := triage.Run(ctx, "Check my account", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if w := mustWait(t, triage, out.RunID); w.Status != run.StatusWaiting || w.AgentName != "triage" {
		t.Fatalf("before the answer: %s, agent %q; want waiting, triage's", w.Status, w.AgentName)
	}
	if err := triage.SubmitToolResult(ctx, out.RunID, "l1", "account ok"); err != nil {
		t.Fatal(err)
	}
	final := mustWait(t, triage, out.RunID)
	if final.Status != run.StatusCompleted || final.Content != "Billing, with the lookup." || final.AgentName != "billing" {
		t.Fatalf("after the answer: %s, %q, agent %q: %s", final.Status, final.Content, final.AgentName, final.Error)
	}
	var models []string
	for _, r := range srv.Requests() {
		models = append(models, r.Model)
	}
	if !slices.Equal(models, []string{"triage-model", "billing-model"}) {
		t.Fatalf("model requests %v; want triage's once, then billing's", models)
	}
}
