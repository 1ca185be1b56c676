package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kern-go/kern/run"
	"github.com/kern-go/kern/server"
)

// mustJSON is v as JSON text.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// countRuns is how many runs the database holds, of every tenant.
func (e *env) countRuns(t *testing.T) int {
	t.Helper()
	res, err := e.db.ListRuns(t.Context(), run.ListParams{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Runs)
}

// rawSubmit posts body as is to /v1/runs with Content-Type ct (none when
// empty).
func (e *env) rawSubmit(t *testing.T, ct, body string) response {
	t.Helper()
	req, err := http.NewRequest("POST", e.url+"/v1/runs", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+e.acme)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// expectDetail fails unless r is a problem with status whose detail holds
// every one of words.
func (r response) expectDetail(t *testing.T, status int, words ...string) {
	t.Helper()
	p := r.expectProblem(t, status)
	detail, _ := p["detail"].(string)
	for _, w := range words {
		if !strings.Contains(detail, w) {
			t.Errorf("detail %q does not name %q", detail, w)
		}
	}
}

// badSubmits are bodies of POST /v1/runs that are refused with 400, each
// with the words its problem's detail must hold.
var badSubmits = []struct {
	name  string
	body  string
	words []string
}{
	{"missing agent", `{"prompt": "hi"}`, []string{"agent"}},
	{"missing prompt", `{"agent": "assistant"}`, []string{"prompt"}},
	{"blank prompt", `{"agent": "assistant", "prompt": "  \n\t "}`, []string{"prompt"}},
	{"unknown field", `{"agent": "assistant", "prompt": "hi", "promt": "x"}`, []string{"promt"}},
	{"wrong type", `{"agent": "assistant", "prompt": 5}`, []string{"prompt"}},
	{"timeout not a duration", `{"agent": "assistant", "prompt": "hi", "timeout": "soon"}`, []string{"timeout", "soon"}},
	{"negative timeout", `{"agent": "assistant", "prompt": "hi", "timeout": "-1s"}`, []string{"timeout", "negative"}},
	{"wait_timeout not a duration", `{"agent": "assistant", "prompt": "hi", "wait_timeout": "x"}`, []string{"wait_timeout"}},
	{"delay not a duration", `{"agent": "assistant", "prompt": "hi", "delay": "x"}`, []string{"delay"}},
	{"negative delay", `{"agent": "assistant", "prompt": "hi", "delay": "-5s"}`, []string{"delay", "negative"}},
	{"delay and start_at", `{"agent": "assistant", "prompt": "hi", "delay": "5s", "start_at": "2030-01-01T00:00:00Z"}`, []string{"delay", "start_at"}},
	{"start_at not a time", `{"agent": "assistant", "prompt": "hi", "start_at": "tomorrow"}`, []string{"start_at", "tomorrow"}},
	{"priority 0", `{"agent": "assistant", "prompt": "hi", "priority": 0}`, []string{"priority"}},
	{"priority 9", `{"agent": "assistant", "prompt": "hi", "priority": 9}`, []string{"priority"}},
	{"priority not an integer", `{"agent": "assistant", "prompt": "hi", "priority": 1.5}`, []string{"priority"}},
	{"ftp webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "ftp://x"}`, []string{"webhook"}},
	{"loopback webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://127.0.0.1/h"}`, []string{"webhook"}},
	{"localhost webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://localhost/h"}`, []string{"webhook"}},
	{"private webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://10.0.0.1/h"}`, []string{"webhook"}},
	{"metadata-service webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://169.254.169.254/"}`, []string{"webhook"}},
	{"IPv6 loopback webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://[::1]:8080/h"}`, []string{"webhook"}},
	{"IPv4-mapped loopback webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://[::ffff:127.0.0.1]/h"}`, []string{"webhook"}},
	{"unspecified webhook", `{"agent": "assistant", "prompt": "hi", "webhook": "http://0.0.0.0/h"}`, []string{"webhook"}},
	{"run_id with a control character", `{"agent": "assistant", "prompt": "hi", "run_id": "a\u0007b"}`, []string{"run id"}},
	{"metadata not an object", `{"agent": "assistant", "prompt": "hi", "metadata": "x"}`, []string{"metadata"}},
	{"metadata an array", `{"agent": "assistant", "prompt": "hi", "metadata": [1]}`, []string{"metadata"}},
	{"an array", `[]`, []string{"JSON"}},
	{"two objects", `{} {}`, []string{"more than one JSON value"}},
	{"an object and junk", `{"agent": "assistant", "prompt": "hi"} x`, []string{"more than one JSON value"}},
	{"not JSON", `agent=assistant&prompt=hi`, []string{"JSON"}},
	{"truncated", `{"agent": "assistant", "prompt": "hi"`, []string{"JSON"}},
	{"empty", ``, []string{"empty"}},
	{"blank", " \n ", []string{"empty"}},
	{"null", `null`, []string{"empty"}}, // no fields: the first one checked is empty
}

// privateWebhooks are refused by default and allowed with
// Config.AllowPrivateWebhooks.
var privateWebhooks = []string{"http://127.0.0.1/h", "http://localhost/h", "http://10.0.0.1/h", "http://169.254.169.254/"}

func TestSubmitRefusesBadBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	for _, c := range badSubmits {
		t.Run(c.name, func(t *testing.T) {
			before := e.countRuns(t)
			e.rawSubmit(t, "application/json", c.body).expectDetail(t, http.StatusBadRequest, c.words...)
			if n := e.countRuns(t); n != before {
				t.Fatalf("a refused submit wrote %d runs", n-before)
			}
		})
	}

	// The media type, checked only when given.
	e.rawSubmit(t, "text/plain", `{"agent": "assistant", "prompt": "hi"}`).expectDetail(t, http.StatusUnsupportedMediaType, "text/plain")
	e.rawSubmit(t, "application/x-www-form-urlencoded", `agent=assistant`).expectProblem(t, http.StatusUnsupportedMediaType)
	e.rawSubmit(t, "application/json; charset=utf-8", `{"agent": "assistant", "prompt": "typed"}`).expect(t, http.StatusAccepted)
	e.rawSubmit(t, "application/merge-patch+json", `{"agent": "assistant", "prompt": "typed"}`).expect(t, http.StatusAccepted)
	e.rawSubmit(t, "", `{"agent": "assistant", "prompt": "untyped"}`).expect(t, http.StatusAccepted)
	if n := e.countRuns(t); n != 3 {
		t.Fatalf("%d runs after 3 accepted submits", n)
	}

	// A duplicate run_id is 409 and changes nothing.
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "first", "run_id": "dup"}).expect(t, http.StatusAccepted)
	p := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "second", "run_id": "dup"}).expectProblem(t, http.StatusConflict)
	if p["type"] != "urn:kern:problem:conflict" {
		t.Fatalf("duplicate run_id: problem %v", p)
	}
	if out, err := e.db.GetRun(t.Context(), "dup"); err != nil || out.Input != "first" {
		t.Fatalf("the duplicate's run: %+v, %v", out, err)
	}
	// Run ids are per tenant: another tenant's "dup" is a run of its own,
	// and says nothing of acme's.
	r := e.do(t, e.globex, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "third", "run_id": "dup"}).expect(t, http.StatusAccepted)
	if got := r.object(t); got["input"] != "third" || strings.Contains(string(r.body), `"first"`) {
		t.Fatalf("globex's dup: %s", r.body)
	}

	// A repeated idempotency key answers the first run, 200 not 202.
	first := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "once", "idempotency_key": "k1"}).
		expect(t, http.StatusAccepted).object(t)
	again := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "once more", "idempotency_key": "k1"})
	again.expect(t, http.StatusOK)
	if got := again.object(t); got["run_id"] != first["run_id"] || got["input"] != "once" {
		t.Fatalf("repeated idempotency key answered %v, want the run %v", got, first["run_id"])
	}
	if again.header.Get("Location") != "" {
		t.Fatalf("a repeat answered Location %q", again.header.Get("Location"))
	}
	// So does a repeat that names its run_id too (a retry of the same request).
	named := map[string]any{"agent": "assistant", "prompt": "named", "run_id": "named", "idempotency_key": "k2"}
	e.do(t, e.acme, "POST", "/v1/runs", named).expect(t, http.StatusAccepted)
	if got := e.do(t, e.acme, "POST", "/v1/runs", named).expect(t, http.StatusOK).object(t); got["run_id"] != "named" {
		t.Fatalf("repeated submit answered %v", got)
	}
	// globex's own key of the same text is its own run.
	e.do(t, e.globex, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "globex", "idempotency_key": "k1"}).expect(t, http.StatusAccepted)
	if n := e.countRuns(t); n != 8 {
		t.Fatalf("%d runs, want 8 (3, dup of acme and of globex, k1 and k2 of acme, k1 of globex)", n)
	}
}

func TestPrivateWebhooksWhenAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{AllowPrivateWebhooks: true})
	for _, u := range privateWebhooks {
		// delay: the runs need not start (and post to these addresses).
		e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "hook", "webhook": u, "delay": "1h"}).
			expect(t, http.StatusAccepted)
	}
	// Not an http URL is still refused.
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "hook", "webhook": "ftp://x"}).
		expectDetail(t, http.StatusBadRequest, "webhook")
	if n := e.countRuns(t); n != len(privateWebhooks) {
		t.Fatalf("%d runs, want %d", n, len(privateWebhooks))
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{MaxBodyBytes: 1024})
	small := mustJSON(t, map[string]any{"agent": "assistant", "prompt": strings.Repeat("a", 900)})
	e.rawSubmit(t, "application/json", small).expect(t, http.StatusAccepted)
	big := mustJSON(t, map[string]any{"agent": "assistant", "prompt": strings.Repeat("a", 1100)})
	p := e.rawSubmit(t, "application/json", big).expectProblem(t, http.StatusRequestEntityTooLarge)
	if p["type"] != "urn:kern:problem:body-too-large" || !strings.Contains(p["detail"].(string), "1024") {
		t.Fatalf("too large: %v", p)
	}
	if n := e.countRuns(t); n != 1 {
		t.Fatalf("%d runs, want the small one", n)
	}
	// The other bodies are bounded too.
	big = mustJSON(t, map[string]any{"agent": "assistant", "prompt": strings.Repeat("a", 1100), "cron": "@daily"})
	e.do(t, e.acme, "PUT", "/v1/schedules/big", big).expectProblem(t, http.StatusRequestEntityTooLarge)
	e.do(t, e.acme, "POST", "/v1/runs/x/tool-calls/c/reject", mustJSON(t, map[string]any{"reason": strings.Repeat("a", 1100)})).
		expectProblem(t, http.StatusRequestEntityTooLarge)
}

func TestListWaitScheduleRouteRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, "Say hello")
	e.wait(t, e.acme, id)

	for _, q := range []struct{ query, word string }{
		{"status=bogus", "bogus"},
		{"status=completed,bogus", "bogus"},
		{"limit=0", "limit"},
		{"limit=-1", "limit"},
		{"limit=x", "limit"},
		{"limit=5000", "limit"},
		{"cursor=garbage", "cursor"},
		// What Postgres text cannot hold is refused, not a failed query (500).
		{"agent=%00", "agent"},
		{"agent=%ff", "agent"},
		{"session_id=a%00b", "session id"},
		{"name=%c3", "name"},
	} {
		e.do(t, e.acme, "GET", "/v1/runs?"+q.query, nil).expectDetail(t, http.StatusBadRequest, q.word)
	}
	e.do(t, e.acme, "GET", "/v1/runs?limit=1000", nil).expect(t, http.StatusOK)

	for _, q := range []string{"x", "10m", "-1s"} {
		e.do(t, e.acme, "GET", "/v1/runs/"+id+"/wait?timeout="+q, nil).expectDetail(t, http.StatusBadRequest, "timeout")
	}
	e.do(t, e.acme, "GET", "/v1/runs/"+id+"/wait?timeout=5m", nil).expect(t, http.StatusOK) // the run is done: at once

	for _, c := range []struct {
		name  string
		body  map[string]any
		words []string
	}{
		{"bad cron", map[string]any{"agent": "assistant", "prompt": "p", "cron": "every day"}, []string{"cron"}},
		{"unknown timezone", map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily", "timezone": "Mars/Olympus"}, []string{"Mars/Olympus"}},
		{"missing prompt", map[string]any{"agent": "assistant", "cron": "@daily"}, []string{"prompt"}},
		{"missing agent", map[string]any{"prompt": "p", "cron": "@daily"}, []string{"agent"}},
		{"unknown field", map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily", "every": "day"}, []string{"every"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.do(t, e.acme, "PUT", "/v1/schedules/x", c.body).expectDetail(t, http.StatusBadRequest, c.words...)
		})
	}
	e.do(t, e.acme, "GET", "/v1/schedules/x", nil).expectProblem(t, http.StatusNotFound)
	for _, name := range []string{"a%00b", "a%ffb"} {
		for _, method := range []string{"GET", "DELETE"} {
			e.do(t, e.acme, method, "/v1/schedules/"+name, nil).expectDetail(t, http.StatusBadRequest, "schedule name")
		}
		e.do(t, e.acme, "PUT", "/v1/schedules/"+name, map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily"}).
			expectDetail(t, http.StatusBadRequest, "schedule name")
	}
	if list, err := e.db.ListSchedules(t.Context()); err != nil || len(list) != 0 {
		t.Fatalf("refused puts wrote schedules: %v, %v", list, err)
	}

	// The tool-call answers' bodies.
	call := "/v1/runs/" + id + "/tool-calls/c"
	e.do(t, e.acme, "POST", call+"/result", `{"output": 5}`).expectDetail(t, http.StatusBadRequest, "output")
	e.do(t, e.acme, "POST", call+"/result", ``).expectDetail(t, http.StatusBadRequest, "empty")
	e.do(t, e.acme, "POST", call+"/reject", `{"why": "x"}`).expectDetail(t, http.StatusBadRequest, "why")

	// Routes and methods that do not exist.
	for _, path := range []string{"/v1/nope", "/v1/runs/" + id + "/nope", "/v2/runs"} { // "/" is the dashboard (TestRootRedirectsToTheDashboard)
		p := e.do(t, e.acme, "GET", path, nil).expectProblem(t, http.StatusNotFound)
		if p["type"] != "urn:kern:problem:not-found" {
			t.Errorf("GET %s: problem %v", path, p)
		}
	}
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/runs", "GET, POST"},
		{"PUT", "/v1/runs/" + id, "GET"},
		{"GET", "/v1/runs/" + id + "/cancel", "POST"},
		{"POST", "/v1/schedules", "GET"},
		{"POST", "/v1/schedules/x", "GET, PUT, DELETE"},
	} {
		r := e.do(t, e.acme, c.method, c.path, nil)
		p := r.expectProblem(t, http.StatusMethodNotAllowed)
		if p["type"] != "urn:kern:problem:method-not-allowed" || r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s: problem %v, Allow %q, want %q", c.method, c.path, p, r.header.Get("Allow"), c.allow)
		}
	}
	if n := e.countRuns(t); n != 1 {
		t.Fatalf("%d runs, want 1", n)
	}
}

// TestPromptLimitIsTheGoAPIs: over HTTP with the default body bound, a
// prompt of run.MaxInputBytes is accepted and one byte more refused as a
// prompt (400 naming it), as the Go API and the CLI do: one limit for all.
func TestPromptLimitIsTheGoAPIs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	at := strings.Repeat("a", run.MaxInputBytes)
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": at, "run_id": "at-limit"}).
		expect(t, http.StatusAccepted)
	p := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": at + "a", "run_id": "over"}).
		expectProblem(t, http.StatusBadRequest)
	if detail, _ := p["detail"].(string); !strings.Contains(detail, "prompt") {
		t.Fatalf("a prompt over the limit: %v; want a problem naming the prompt", p)
	}
}
