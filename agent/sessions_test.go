package agent_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// A run of a session gets the session's earlier runs of the same agent
// before its prompt, oldest first; a run of another session gets none.
func TestSessionHistoryGoesBeforeThePrompt(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "companion", Instructions: "Be brief.", Model: model, DB: d, HistoryRuns: 2}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	srv.Script(func(req fakellm.Request) fakellm.Reply {
		return fakellm.Reply{Content: "answer to " + req.LastUserMessage()}
	})
	ctx := kerntest.Context(t, 30*time.Second)
	ask := func(session, prompt string) fakellm.Request {
		t.Helper()
		out, err := a.Run(ctx, prompt, agent.Background(true), agent.WithSessionID(session))
		if err != nil {
			t.Fatal(err)
		}
		if out := mustWait(t, a, out.RunID); out.Status != run.StatusCompleted {
			t.Fatalf("run %+v", out)
		}
		reqs := srv.Requests()
		return reqs[len(reqs)-1]
	}
	ask("ada", "one")
	ask("ada", "two")
	ask("grace", "elsewhere")
	got := ask("ada", "three")
	want := []fakellm.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "one"}, {Role: "assistant", Content: "answer to one"},
		{Role: "user", Content: "two"}, {Role: "assistant", Content: "answer to two"},
		{Role: "user", Content: "three"},
	}
	if !sameMessages(got.Messages, want) {
		t.Fatalf("the third run of session ada sent %+v, want %+v", got.Messages, want)
	}
	// HistoryRuns 2: the oldest of three earlier runs is left out.
	got = ask("ada", "four")
	if len(got.Messages) != 6 || got.Messages[1].Content != "two" || got.Messages[5].Content != "four" {
		t.Fatalf("with three earlier runs, HistoryRuns 2 sent %+v", got.Messages)
	}
	if other := ask("grace", "again"); len(other.Messages) != 4 || other.Messages[1].Content != "elsewhere" {
		t.Fatalf("session grace sent %+v: only its own run may come before", other.Messages)
	}
}

func sameMessages(got, want []fakellm.Message) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Role != want[i].Role || got[i].Content != want[i].Content {
			return false
		}
	}
	return true
}
