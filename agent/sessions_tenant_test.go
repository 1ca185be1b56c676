package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A session's history is its tenant's own: another tenant submitting on the
// same session id gets none of it, neither in its model request nor in its
// run's content or messages; the same tenant still gets it.
func TestSessionHistoryStaysWithItsTenant(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "support", Instructions: "Be brief.", Model: model, DB: d, HistoryRuns: 5}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		// The reply echoes every message the model was sent, so whatever
		// history leaks into a request also lands in the run's content.
		var b strings.Builder
		for _, m := range req.Messages {
			b.WriteString(m.Role + ": " + m.Content + "\n")
		}
		return fakellm.Reply{Content: b.String()}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	const secret = "4111 1111 1111 1111"
	ask := func(tenant, prompt string) (*run.Output, fakellm.Request) {
		t.Helper()
		out, err := a.Run(ctx, prompt, agent.Background(true), agent.WithSessionID("support-42"), agent.WithTenant(tenant))
		if err != nil {
			t.Fatal(err)
		}
		out = mustWait(t, a, out.RunID)
		if out.Status != run.StatusCompleted {
			t.Fatalf("run %+v", out)
		}
		for _, req := range srv.Requests() {
			if req.LastUserMessage() == prompt {
				return out, req
			}
		}
		t.Fatalf("no model request for %q", prompt)
		return nil, fakellm.Request{}
	}
	ask("victim", "my card is "+secret)

	out, req := ask("attacker", "hello")
	for _, m := range req.Messages {
		if strings.Contains(m.Content, secret) {
			t.Fatalf("the attacker's model request carries the victim's session: %+v", req.Messages)
		}
	}
	if len(req.Messages) != 2 {
		t.Fatalf("the attacker's first run of the session sent %+v, want the instructions and its prompt", req.Messages)
	}
	if strings.Contains(out.Content, secret) {
		t.Fatalf("the attacker's run content carries the victim's session: %q", out.Content)
	}
	attacker, err := d.ForTenant("attacker")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := attacker.Messages(ctx, out.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		t.Fatal("the attacker's run has no messages")
	}
	for _, m := range msgs {
		if strings.Contains(m.Content, secret) {
			t.Fatalf("the attacker's messages carry the victim's session: %+v", msgs)
		}
	}

	// The victim's next run has its own history, and not the attacker's.
	_, req = ask("victim", "and my address?")
	var got []string
	for _, m := range req.Messages {
		got = append(got, m.Role+": "+m.Content)
	}
	if len(req.Messages) != 4 || req.Messages[1].Content != "my card is "+secret {
		t.Fatalf("the victim's second run sent %q, want its first run before the prompt", got)
	}
	for _, m := range req.Messages {
		if strings.Contains(m.Content, "hello") {
			t.Fatalf("the victim's run carries the attacker's: %q", got)
		}
	}
}
