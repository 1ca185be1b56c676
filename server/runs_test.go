package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kern-go/kern/server"
)

func TestSubmitWaitGetListMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	r := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{
		"agent": "assistant", "prompt": "Say hello", "session_id": "s1", "name": "greeting",
		"metadata": map[string]any{"n": 12345678901234, "tag": "x"}, "timeout": "1m", "priority": 1,
	}).expect(t, http.StatusAccepted)
	sub := r.object(t)
	id := sub["run_id"].(string)
	if sub["status"] != "pending" || r.header.Get("Location") != "/v1/runs/"+id {
		t.Fatalf("submit answered %s (Location %q)", r.body, r.header.Get("Location"))
	}
	done := e.wait(t, e.acme, id)
	if done["status"] != "completed" || done["content"] == "" || done["session_id"] != "s1" || done["name"] != "greeting" {
		t.Fatalf("run ended as %v", done)
	}
	if meta := done["metadata"].(map[string]any); meta["n"] != float64(12345678901234) || meta["tag"] != "x" {
		t.Fatalf("metadata came back as %v", meta)
	}
	for _, k := range []string{"run_id", "session_id", "agent", "name", "status", "input", "content", "error", "metadata",
		"metrics", "attempt", "waiting", "created_at", "started_at", "finished_at"} {
		if _, ok := done[k]; !ok {
			t.Errorf("run JSON lacks %q: %v", k, done)
		}
	}
	got := e.do(t, e.acme, "GET", "/v1/runs/"+id, nil).expect(t, http.StatusOK).object(t)
	if got["content"] != done["content"] {
		t.Fatalf("get: %v, wait: %v", got["content"], done["content"])
	}
	out, err := e.db.GetRun(t.Context(), id)
	if err != nil || out.TenantID != "acme" {
		t.Fatalf("stored run: %+v, %v (want tenant acme)", out, err)
	}

	var list struct {
		Runs       []map[string]any `json:"runs"`
		NextCursor string           `json:"next_cursor"`
	}
	e.do(t, e.acme, "GET", "/v1/runs?status=completed,error&agent=assistant&session_id=s1&limit=10", nil).expect(t, http.StatusOK).json(t, &list)
	if len(list.Runs) != 1 || list.Runs[0]["run_id"] != id || list.NextCursor != "" {
		t.Fatalf("list: %+v", list)
	}

	var msgs struct {
		Messages []map[string]any `json:"messages"`
	}
	e.do(t, e.acme, "GET", "/v1/runs/"+id+"/messages", nil).expect(t, http.StatusOK).json(t, &msgs)
	if len(msgs.Messages) != 2 || msgs.Messages[0]["role"] != "user" || msgs.Messages[0]["content"] != "Say hello" ||
		msgs.Messages[1]["role"] != "assistant" || msgs.Messages[1]["content"] != done["content"] {
		t.Fatalf("messages: %+v", msgs.Messages)
	}
}

func TestListPagesWithCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	want := map[string]bool{}
	for range 5 {
		want[e.submit(t, e.acme, "page me")] = true
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		var list struct {
			Runs       []map[string]any `json:"runs"`
			NextCursor string           `json:"next_cursor"`
		}
		e.do(t, e.acme, "GET", "/v1/runs?limit=2&cursor="+cursor, nil).expect(t, http.StatusOK).json(t, &list)
		for _, r := range list.Runs {
			id := r["run_id"].(string)
			if seen[id] {
				t.Fatalf("run %s on two pages", id)
			}
			seen[id] = true
		}
		if cursor = list.NextCursor; cursor == "" {
			if pages != 2 {
				t.Fatalf("%d pages of 2 for 5 runs", pages+1)
			}
			break
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("listed %d runs, want %d", len(seen), len(want))
	}
}

func TestCancelBeforeStartAndRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	// An id with no run yet: cancelled, no run; a submit with it later never reaches the model.
	c := e.do(t, e.acme, "POST", "/v1/runs/early/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != true || c["run"] != nil {
		t.Fatalf("cancel before start: %v", c)
	}
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "never", "run_id": "early"}).expect(t, http.StatusAccepted)
	if got := e.wait(t, e.acme, "early"); got["status"] != "cancelled" {
		t.Fatalf("pre-cancelled run ended %v", got["status"])
	}
	for _, req := range e.model.Requests() {
		if strings.Contains(req.LastUserMessage(), "never") {
			t.Fatal("a pre-cancelled run reached the model")
		}
	}

	id := e.submit(t, e.acme, "[fake:hang] hang")
	waitForModel(t, e, 1)
	c = e.do(t, e.acme, "POST", "/v1/runs/"+id+"/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != true || c["run"].(map[string]any)["run_id"] != id {
		t.Fatalf("cancel: %v", c)
	}
	if got := e.wait(t, e.acme, id); got["status"] != "cancelled" {
		t.Fatalf("cancelled run ended %v", got["status"])
	}
	// A finished run: not cancelled, unchanged.
	c = e.do(t, e.acme, "POST", "/v1/runs/"+id+"/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != true { // already cancelled: idempotent
		t.Fatalf("second cancel: %v", c)
	}
	done := e.submit(t, e.acme, "finish")
	e.wait(t, e.acme, done)
	c = e.do(t, e.acme, "POST", "/v1/runs/"+done+"/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != false || c["run"].(map[string]any)["status"] != "completed" {
		t.Fatalf("cancel of a completed run: %v", c)
	}
}

func TestApproveRejectResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, approvalPrompt)
	w := e.wait(t, e.acme, id)
	calls, _ := w["waiting"].([]any)
	if w["status"] != "waiting" || len(calls) != 1 {
		t.Fatalf("run did not wait: %v", w)
	}
	call := calls[0].(map[string]any)["id"].(string)
	path := "/v1/runs/" + id + "/tool-calls/" + call
	e.do(t, e.acme, "POST", path+"/approve", nil).expect(t, http.StatusOK)
	e.do(t, e.acme, "POST", path+"/approve", nil).expectProblem(t, http.StatusConflict) // the first answer stands
	if got := e.wait(t, e.acme, id); got["status"] != "completed" || e.transfers.Load() != 1 {
		t.Fatalf("approved run: %v, transfers %d", got["status"], e.transfers.Load())
	}

	id = e.submit(t, e.acme, approvalPrompt)
	w = e.wait(t, e.acme, id)
	call = w["waiting"].([]any)[0].(map[string]any)["id"].(string)
	e.do(t, e.acme, "POST", "/v1/runs/"+id+"/tool-calls/"+call+"/reject", map[string]any{"reason": "too much"}).expect(t, http.StatusOK)
	if got := e.wait(t, e.acme, id); got["status"] != "completed" || e.transfers.Load() != 1 {
		t.Fatalf("rejected run: %v, transfers %d", got["status"], e.transfers.Load())
	}

	id = e.submit(t, e.acme, approvalPrompt)
	w = e.wait(t, e.acme, id)
	call = w["waiting"].([]any)[0].(map[string]any)["id"].(string)
	e.do(t, e.acme, "POST", "/v1/runs/"+id+"/tool-calls/"+call+"/result", map[string]any{}).expectProblem(t, http.StatusBadRequest)
	e.do(t, e.acme, "POST", "/v1/runs/"+id+"/tool-calls/"+call+"/result", map[string]any{"output": "by hand"}).expect(t, http.StatusOK)
	if got := e.wait(t, e.acme, id); got["status"] != "completed" || e.transfers.Load() != 1 {
		t.Fatalf("answered run: %v, transfers %d", got["status"], e.transfers.Load())
	}
}

// A list carries the start of each run's content only: a page of long
// answers would be megabytes. The run itself has all of it.
func TestListRunsCutsContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	long := e.submit(t, e.acme, "[fake:words=150] write at length")
	short := e.submit(t, e.acme, "Say hello")
	full := map[string]string{}
	for _, id := range []string{long, short} {
		r := e.wait(t, e.acme, id)
		if r["status"] != "completed" {
			t.Fatalf("run %s: %v", id, r)
		}
		full[id] = r["content"].(string)
	}
	if len([]rune(full[long])) <= 200 || len(full[short]) > 200 {
		t.Fatalf("contents of %d and %d characters; want one over 200, one under", len([]rune(full[long])), len([]rune(full[short])))
	}
	var list struct {
		Runs []map[string]any `json:"runs"`
	}
	e.do(t, e.acme, "GET", "/v1/runs", nil).expect(t, http.StatusOK).json(t, &list)
	if len(list.Runs) != 2 {
		t.Fatalf("list: %+v", list.Runs)
	}
	for _, r := range list.Runs {
		id := r["run_id"].(string)
		want, cut := full[id], false
		if rs := []rune(want); len(rs) > 200 {
			want, cut = string(rs[:200]), true
		}
		if r["content"] != want || r["content_truncated"] != cut || r["content_bytes"] != float64(len(full[id])) {
			t.Errorf("run %s in the list: content %q, truncated %v, bytes %v; want %q, %v, %d",
				id, r["content"], r["content_truncated"], r["content_bytes"], want, cut, len(full[id]))
		}
	}
	if got := e.do(t, e.acme, "GET", "/v1/runs/"+long, nil).expect(t, http.StatusOK).object(t); got["content"] != full[long] {
		t.Errorf("GET the run: content %q, want all of %q", got["content"], full[long])
	}
}
