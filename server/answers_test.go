package server_test

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/server"
)

// askerPrompt makes agent "asker" call ask (External) and check (which
// NeedsApproval) in one turn, then answer.
const askerPrompt = `fake-plan: {"turns": [[{"name": "ask", "arguments": {"q": 1}}, {"name": "check", "arguments": {}}]], "answer": "asked"}`

// askerEnv is env with a second agent, "asker", served by a worker of its
// own: a tool "ask" that is External and one "check" that NeedsApproval.
func askerEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, server.Config{})
	_, model := kerntest.Model(t)
	asker := &agent.Agent{Name: "asker", Model: model, DB: e.db, Tools: []agent.Tool{
		{Name: "ask", Description: "Asks a person.", External: true, Parameters: map[string]any{"type": "object"}},
		{Name: "check", Description: "Checks.", NeedsApproval: true, Parameters: map[string]any{"type": "object"},
			Call: func(context.Context, json.RawMessage) (string, error) { return "checked", nil }},
	}}
	kerntest.Worker(t, e.db, agent.WorkerConfig{}, asker)
	return e
}

// submitAsker submits askerPrompt and returns the run once it waits, with
// the ids of its ask and check calls.
func (e *env) submitAsker(t *testing.T) (id, ask, check string) {
	t.Helper()
	r := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "asker", "prompt": askerPrompt}).expect(t, http.StatusAccepted)
	id, _ = r.object(t)["run_id"].(string)
	w := e.wait(t, e.acme, id)
	calls, _ := w["waiting"].([]any)
	if w["status"] != "waiting" || len(calls) != 2 {
		t.Fatalf("run did not wait on two calls: %v", w)
	}
	for _, c := range calls {
		m := c.(map[string]any)
		switch m["name"] {
		case "ask":
			ask = m["id"].(string)
		case "check":
			check = m["id"].(string)
		}
	}
	return id, ask, check
}

// answerPath and answerBody are an answer's request.
func answerPath(id, call, kind string) string {
	return "/v1/runs/" + id + "/tool-calls/" + call + "/" + kind
}

func answerBody(kind string) any {
	switch kind {
	case "reject":
		return map[string]any{"reason": "no"}
	case "result":
		return map[string]any{"output": "by hand"}
	}
	return nil
}

// Answers over HTTP, in sequences and at once, never answer 500: an
// approval of an External call is 400 and changes nothing, an answer to a
// call answered already is 409, and the run completes once its calls are
// answered.
func TestAnswersNeverInternalError(t *testing.T) {
	t.Parallel()
	e := askerEnv(t)
	kinds := []string{"approve", "reject", "result"}

	// The reproduction: approving the External call is 400; the run still
	// waits on it, and its result completes the run.
	id, ask, check := e.submitAsker(t)
	e.do(t, e.acme, "POST", answerPath(id, ask, "approve"), nil).expectProblem(t, http.StatusBadRequest)
	if w := e.do(t, e.acme, "GET", "/v1/runs/"+id, nil).expect(t, http.StatusOK).object(t); len(w["waiting"].([]any)) != 2 {
		t.Fatalf("the refused approval changed the run: %v", w)
	}
	e.do(t, e.acme, "POST", answerPath(id, check, "approve"), nil).expect(t, http.StatusOK)
	e.do(t, e.acme, "POST", answerPath(id, ask, "result"), answerBody("result")).expect(t, http.StatusOK)
	if got := e.wait(t, e.acme, id); got["status"] != "completed" {
		t.Fatalf("run ended %v", got["status"])
	}

	// Sequences: each answer's status is what it should be.
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 3))
		id, ask, check := e.submitAsker(t)
		open := map[string]bool{ask: true, check: true}
		for len(open) > 0 {
			kind, call := kinds[rng.IntN(3)], []string{ask, check, "never-asked"}[rng.IntN(3)]
			want := http.StatusOK
			switch {
			case !open[call]:
				want = http.StatusConflict
			case kind == "approve" && call == ask:
				want = http.StatusBadRequest
			}
			e.do(t, e.acme, "POST", answerPath(id, call, kind), answerBody(kind)).expect(t, want)
			if want == http.StatusOK {
				delete(open, call)
			}
		}
		if got := e.wait(t, e.acme, id); got["status"] != "completed" {
			t.Fatalf("seed %d: run ended %v", seed, got["status"])
		}
	}

	// At once: 200, 400 or 409, never 500.
	id, ask, check = e.submitAsker(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 24 {
		kind, call := kinds[i%3], []string{ask, check}[i/3%2]
		wg.Go(func() {
			<-start
			switch r := e.do(t, e.acme, "POST", answerPath(id, call, kind), answerBody(kind)); r.status {
			case http.StatusOK, http.StatusBadRequest, http.StatusConflict:
			default:
				t.Errorf("%s %s: %d %s", kind, call, r.status, r.body)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := e.wait(t, e.acme, id); got["status"] != "completed" {
		t.Fatalf("run after concurrent answers ended %v", got["status"])
	}
}

// A wait stored before kern told External calls apart does not say which
// calls are External: an approval of such a call stands, the worker waits
// on it again (now marked External), and the answers after that are 400
// for another approval and 200 for the result, never 500.
func TestAnswersAfterLegacyApproval(t *testing.T) {
	t.Parallel()
	e := askerEnv(t)
	id, ask, check := e.submitAsker(t)
	ctx := kerntest.Context(t, 10*time.Second)
	if _, err := e.db.Pool().Exec(ctx, `UPDATE kern_run SET waiting_calls =
		(SELECT jsonb_agg(c - 'external') FROM jsonb_array_elements(waiting_calls) c) WHERE id = $1`, engine.RunKey("acme", id)); err != nil {
		t.Fatal(err)
	}
	e.do(t, e.acme, "POST", answerPath(id, check, "reject"), answerBody("reject")).expect(t, http.StatusOK)
	e.do(t, e.acme, "POST", answerPath(id, ask, "approve"), nil).expect(t, http.StatusOK)
	w := e.wait(t, e.acme, id) // pending until the worker waits again
	if calls := w["waiting"].([]any); len(calls) != 1 || calls[0].(map[string]any)["id"] != ask {
		t.Fatalf("waits again on %v, want %s", w["waiting"], ask)
	}
	e.do(t, e.acme, "POST", answerPath(id, ask, "approve"), nil).expectProblem(t, http.StatusBadRequest)
	e.do(t, e.acme, "POST", answerPath(id, ask, "result"), answerBody("result")).expect(t, http.StatusOK)
	e.do(t, e.acme, "POST", answerPath(id, ask, "reject"), answerBody("reject")).expectProblem(t, http.StatusConflict)
	if got := e.wait(t, e.acme, id); got["status"] != "completed" {
		t.Fatalf("run ended %v", got["status"])
	}
}

// The dashboard offers no Approve for a call of an External tool (its
// answer is a result), and does for a call that needs approval.
func TestDashboardExternalCallHasNoApprove(t *testing.T) {
	t.Parallel()
	e := askerEnv(t)
	id, ask, check := e.submitAsker(t)
	req, err := http.NewRequest("GET", e.url+"/ui/runs/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "kern_session", Value: e.acme})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("run page: %d, %v", res.StatusCode, err)
	}
	card := func(call string) string {
		_, after, ok := strings.Cut(string(page), `data-call-id="`+call+`"`)
		if !ok {
			t.Fatalf("no card for call %s in the page", call)
		}
		c, _, _ := strings.Cut(after, `class="waiting-call`)
		return c
	}
	if c := card(ask); strings.Contains(c, `class="approve"`) || !strings.Contains(c, `class="answer"`) || !strings.Contains(c, `class="reject"`) {
		t.Errorf("the External call's card offers Approve, or lacks the result or reject form:\n%s", c)
	}
	if c := card(check); !strings.Contains(c, `class="approve"`) {
		t.Errorf("the call that needs approval has no Approve:\n%s", c)
	}
}
