package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
	"github.com/kern-go/kern/server"
)

// unknownRun is an id that no tenant has a run of: what another tenant's
// run must look like.
const unknownRun = "no-such-run"

// sameAsUnknown fails unless got, the answer to a request on another
// tenant's run id, is the 404 problem that want, the same request on
// an unknown id, is: status, type and title equal, and the detail too once
// the ids are swapped (so it leaks nothing the unknown id's does not).
func sameAsUnknown(t *testing.T, what, id, unknown string, got, want response) {
	t.Helper()
	if got.status != http.StatusNotFound || want.status != http.StatusNotFound {
		t.Fatalf("%s: status %d (%s), on %q %d (%s); want 404 for both",
			what, got.status, got.body, unknown, want.status, want.body)
	}
	for _, r := range []response{got, want} {
		if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s: Content-Type %q, want application/problem+json: %s", what, ct, r.body)
		}
	}
	g, w := got.object(t), want.object(t)
	for _, k := range []string{"status", "type", "title"} {
		if g[k] != w[k] {
			t.Errorf("%s: problem %s is %v, on an unknown id %v", what, k, g[k], w[k])
		}
	}
	if w["type"] != "urn:kern:problem:not-found" {
		t.Errorf("%s: the unknown id's problem type is %v, want urn:kern:problem:not-found", what, w["type"])
	}
	gd, _ := g["detail"].(string)
	wd, _ := w["detail"].(string)
	if strings.ReplaceAll(gd, id, unknown) != wd {
		t.Errorf("%s: detail %q, on an unknown id %q", what, gd, wd)
	}
}

// runIDs lists the run ids of GET path as key's tenant.
func (e *env) runIDs(t *testing.T, key, path string) []string {
	t.Helper()
	var list struct {
		Runs []map[string]any `json:"runs"`
	}
	e.do(t, key, "GET", path, nil).expect(t, http.StatusOK).json(t, &list)
	ids := make([]string, len(list.Runs))
	for i, r := range list.Runs {
		ids[i], _ = r["run_id"].(string)
	}
	return ids
}

// scheduleNames lists the schedule names of key's tenant.
func (e *env) scheduleNames(t *testing.T, key string) []string {
	t.Helper()
	var list struct {
		Schedules []map[string]any `json:"schedules"`
	}
	e.do(t, key, "GET", "/v1/schedules", nil).expect(t, http.StatusOK).json(t, &list)
	names := make([]string, len(list.Schedules))
	for i, s := range list.Schedules {
		names[i], _ = s["name"].(string)
	}
	return names
}

// TestOtherTenantsRunsAreUnknown holds every run route to "another
// tenant's run answers exactly as an unknown id, and is never touched".
func TestOtherTenantsRunsAreUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	ctx := t.Context()

	// acme's runs: one completed, one waiting on an approval, one
	// cancelled before it started.
	done := e.submit(t, e.acme, "Say hello")
	if got := e.wait(t, e.acme, done); got["status"] != "completed" {
		t.Fatalf("plain run ended %v", got["status"])
	}
	// A child of it (SubmitParams.ParentRunID; the HTTP API lists children
	// but does not submit them yet).
	acmeDB, err := e.db.ForTenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acmeDB.SubmitRun(ctx, db.SubmitParams{RunID: "acme-kid", AgentName: "assistant", Input: "Say hello",
		Enqueue: true, ParentRunID: done}); err != nil {
		t.Fatal(err)
	}
	if got := e.wait(t, e.acme, "acme-kid"); got["status"] != "completed" || got["parent_run_id"] != done {
		t.Fatalf("acme's child run: %v", got)
	}
	waiting := e.submit(t, e.acme, approvalPrompt)
	w := e.wait(t, e.acme, waiting)
	calls, _ := w["waiting"].([]any)
	if w["status"] != "waiting" || len(calls) != 1 {
		t.Fatalf("run did not wait: %v", w)
	}
	call := calls[0].(map[string]any)["id"].(string)
	c := e.do(t, e.acme, "POST", "/v1/runs/acme-early/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != true || c["run"] != nil {
		t.Fatalf("acme's cancel before start: %v", c)
	}
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "never", "run_id": "acme-early"}).
		expect(t, http.StatusAccepted)
	if got := e.wait(t, e.acme, "acme-early"); got["status"] != "cancelled" {
		t.Fatalf("pre-cancelled run ended %v", got["status"])
	}
	mine := e.submit(t, e.globex, "globex's own") // so that globex's lists are not empty
	if got := e.wait(t, e.globex, mine); got["status"] != "completed" {
		t.Fatalf("globex's run ended %v", got["status"])
	}

	for _, id := range []string{done, waiting, "acme-early", "acme-kid"} {
		for _, route := range []struct{ method, path string }{
			{"GET", ""},
			{"GET", "/wait?timeout=1s"},
			{"GET", "/events"},
			{"GET", "/events?after=0"},
			{"GET", "/messages"},
		} {
			got := e.do(t, e.globex, route.method, "/v1/runs/"+id+route.path, nil)
			want := e.do(t, e.globex, route.method, "/v1/runs/"+unknownRun+route.path, nil)
			sameAsUnknown(t, route.method+" "+id+route.path, id, unknownRun, got, want)
		}
	}

	// The answers to acme's waiting run.
	for _, a := range []struct {
		verb string
		body any
	}{
		{"approve", nil},
		{"reject", map[string]any{"reason": "not yours"}},
		{"reject", nil},
		{"result", map[string]any{"output": "forged"}},
	} {
		got := e.do(t, e.globex, "POST", "/v1/runs/"+waiting+"/tool-calls/"+call+"/"+a.verb, a.body)
		want := e.do(t, e.globex, "POST", "/v1/runs/"+unknownRun+"/tool-calls/"+call+"/"+a.verb, a.body)
		sameAsUnknown(t, a.verb+" "+waiting, waiting, unknownRun, got, want)
	}

	// A cancel answers as for an id with no run, and touches nothing.
	want := e.do(t, e.globex, "POST", "/v1/runs/"+unknownRun+"/cancel", nil).expect(t, http.StatusOK).object(t)
	if want["cancelled"] != true || want["run"] != nil {
		t.Fatalf("cancel of an unknown id: %v", want)
	}
	for _, id := range []string{waiting, done, "acme-early", "acme-kid"} {
		got := e.do(t, e.globex, "POST", "/v1/runs/"+id+"/cancel", nil).expect(t, http.StatusOK).object(t)
		if len(got) != 2 || got["cancelled"] != true || got["run"] != nil {
			t.Fatalf("globex's cancel of acme's run %s: %v, want %v", id, got, want)
		}
	}

	// acme's runs are as they were.
	for id, status := range map[string]run.Status{waiting: run.StatusWaiting, done: run.StatusCompleted, "acme-early": run.StatusCancelled,
		"acme-kid": run.StatusCompleted} {
		if got := e.do(t, e.acme, "GET", "/v1/runs/"+id, nil).expect(t, http.StatusOK).object(t); got["status"] != string(status) {
			t.Fatalf("acme's run %s is %v after globex's requests, want %s", id, got["status"], status)
		}
		out, err := e.db.GetRun(ctx, id)
		if err != nil || out.Status != status || out.TenantID != "acme" {
			t.Fatalf("stored run %s: %+v, %v (want %s, tenant acme)", id, out, err, status)
		}
	}
	if n := e.transfers.Load(); n != 0 {
		t.Fatalf("globex's answers ran the tool %d times", n)
	}

	// Lists: globex sees its run and none of acme's, whatever the filter.
	for _, q := range []string{"", "?agent=assistant", "?status=waiting", "?status=completed", "?status=cancelled",
		"?status=pending,running,waiting,completed,error,cancelled", "?status=waiting&agent=assistant", "?limit=1000",
		"?parent_run_id=" + done} {
		ids := e.runIDs(t, e.globex, "/v1/runs"+q)
		for _, id := range []string{done, waiting, "acme-early", "acme-kid"} {
			if slices.Contains(ids, id) {
				t.Fatalf("globex's list %q shows acme's run %s: %v", q, id, ids)
			}
		}
		if q == "" || q == "?agent=assistant" || q == "?status=completed" {
			if !slices.Equal(ids, []string{mine}) {
				t.Fatalf("globex's list %q is %v, want its own run %s", q, ids, mine)
			}
		}
		if slices.Contains(e.runIDs(t, e.acme, "/v1/runs"+q), mine) {
			t.Fatalf("acme's list %q shows globex's run %s", q, mine)
		}
	}
	if ids := e.runIDs(t, e.acme, "/v1/runs"); len(ids) != 4 {
		t.Fatalf("acme lists %v, want its 4 runs", ids)
	}
	if ids := e.runIDs(t, e.acme, "/v1/runs?parent_run_id="+done); !slices.Equal(ids, []string{"acme-kid"}) {
		t.Fatalf("acme lists the children of %s as %v, want [acme-kid]", done, ids)
	}

	// globex's cancel did not stick to acme's waiting run: approved, it completes.
	e.do(t, e.acme, "POST", "/v1/runs/"+waiting+"/tool-calls/"+call+"/approve", nil).expect(t, http.StatusOK)
	if got := e.wait(t, e.acme, waiting); got["status"] != "completed" || e.transfers.Load() != 1 {
		t.Fatalf("acme's approved run: %v, transfers %d", got["status"], e.transfers.Load())
	}
}

func TestOtherTenantsSchedulesAreUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	body := map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily"}
	acme := e.do(t, e.acme, "PUT", "/v1/schedules/daily", body).expect(t, http.StatusOK).object(t)
	if acme["name"] != "daily" || acme["prompt"] != "p" {
		t.Fatalf("acme's schedule: %v", acme)
	}
	if names := e.scheduleNames(t, e.globex); len(names) != 0 {
		t.Fatalf("globex lists schedules %v", names)
	}
	for _, method := range []string{"GET", "DELETE"} {
		got := e.do(t, e.globex, method, "/v1/schedules/daily", nil)
		want := e.do(t, e.globex, method, "/v1/schedules/no-such-schedule", nil)
		sameAsUnknown(t, method+" schedule", "daily", "no-such-schedule", got, want)
	}
	if got := e.do(t, e.acme, "GET", "/v1/schedules/daily", nil).expect(t, http.StatusOK).object(t); got["prompt"] != "p" {
		t.Fatalf("acme's schedule after globex's delete: %v", got)
	}

	// globex's own "daily" is another schedule.
	body["prompt"] = "g"
	g := e.do(t, e.globex, "PUT", "/v1/schedules/daily", body).expect(t, http.StatusOK).object(t)
	if g["prompt"] != "g" {
		t.Fatalf("globex's schedule: %v", g)
	}
	if got := e.do(t, e.acme, "GET", "/v1/schedules/daily", nil).expect(t, http.StatusOK).object(t); got["prompt"] != "p" {
		t.Fatalf("acme's schedule is now %v", got)
	}
	if got := e.do(t, e.globex, "GET", "/v1/schedules/daily", nil).expect(t, http.StatusOK).object(t); got["prompt"] != "g" {
		t.Fatalf("globex's schedule is %v", got)
	}
	for _, key := range []string{e.acme, e.globex} {
		if names := e.scheduleNames(t, key); !slices.Equal(names, []string{"daily"}) {
			t.Fatalf("schedules listed: %v, want [daily]", names)
		}
	}
	e.do(t, e.globex, "DELETE", "/v1/schedules/daily", nil).expect(t, http.StatusNoContent)
	if got := e.do(t, e.acme, "GET", "/v1/schedules/daily", nil).expect(t, http.StatusOK).object(t); got["prompt"] != "p" {
		t.Fatalf("acme's schedule after globex deleted its own: %v", got)
	}
	e.do(t, e.globex, "GET", "/v1/schedules/daily", nil).expectProblem(t, http.StatusNotFound)
}

// TestOtherTenantsCancelBeforeStart: a tenant's cancel of an id with no run
// does not cancel another tenant's run submitted with that id later.
func TestOtherTenantsCancelBeforeStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	c := e.do(t, e.globex, "POST", "/v1/runs/shared-id/cancel", nil).expect(t, http.StatusOK).object(t)
	if c["cancelled"] != true || c["run"] != nil {
		t.Fatalf("globex's cancel before start: %v", c)
	}
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "go on", "run_id": "shared-id"}).
		expect(t, http.StatusAccepted)
	if got := e.wait(t, e.acme, "shared-id"); got["status"] != "completed" {
		t.Fatalf("acme's run ended %v, want completed: globex's cancel applied to it", got["status"])
	}
	out, err := e.db.GetRun(t.Context(), "shared-id")
	if err != nil || out.TenantID != "acme" || out.Status != run.StatusCompleted {
		t.Fatalf("stored run: %+v, %v", out, err)
	}
	e.do(t, e.globex, "GET", "/v1/runs/shared-id", nil).expectProblem(t, http.StatusNotFound)
}

// route is a request on a /v1 route of server.go's route table: its
// pattern, the path with values for the wildcards, and a body it accepts.
type route struct {
	pattern, method, path string
	body                  any
}

// v1Routes is a request on every route that takes a key, on runID's run.
func v1Routes(runID string) []route {
	values := strings.NewReplacer("{run_id}", runID, "{call_id}", "call-1", "{name}", "daily")
	mk := func(pattern string, body any) route {
		method, path, _ := strings.Cut(pattern, " ")
		path = values.Replace(path)
		if strings.HasSuffix(path, "/wait") {
			path += "?timeout=1s"
		}
		return route{pattern: pattern, method: method, path: path, body: body}
	}
	return []route{
		mk("POST /v1/runs", map[string]any{"agent": "assistant", "prompt": "no key"}),
		mk("GET /v1/runs", nil),
		mk("GET /v1/runs/{run_id}", nil),
		mk("GET /v1/runs/{run_id}/wait", nil),
		mk("POST /v1/runs/{run_id}/cancel", nil),
		mk("GET /v1/runs/{run_id}/events", nil),
		mk("GET /v1/runs/{run_id}/messages", nil),
		mk("POST /v1/runs/{run_id}/tool-calls/{call_id}/approve", nil),
		mk("POST /v1/runs/{run_id}/tool-calls/{call_id}/reject", map[string]any{"reason": "r"}),
		mk("POST /v1/runs/{run_id}/tool-calls/{call_id}/result", map[string]any{"output": "o"}),
		mk("GET /v1/schedules", nil),
		mk("GET /v1/schedules/{name}", nil),
		mk("PUT /v1/schedules/{name}", map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily"}),
		mk("DELETE /v1/schedules/{name}", nil),
		mk("POST /v1/webhook-secret", nil),
	}
}

// keyedPatterns are the routes that /v1/openapi.json says take a key (all
// but those with "security": []); openapi_test.go holds it to the route
// table, so a route added there fails TestEveryRouteNeedsAValidKey until
// v1Routes has it.
func (e *env) keyedPatterns(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	e.do(t, "", "GET", "/v1/openapi.json", nil).expect(t, http.StatusOK).json(t, &doc)
	var patterns []string
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Security *[]any `json:"security"`
			}
			if json.Unmarshal(raw, &op) != nil { // parameters and the like, not an operation
				continue
			}
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
			default:
				continue
			}
			if op.Security != nil && len(*op.Security) == 0 {
				continue // public
			}
			patterns = append(patterns, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(patterns)
	return patterns
}

// doAuth sends r with the Authorization header auth (none when empty).
func (e *env) doAuth(t *testing.T, auth string, r route) response {
	t.Helper()
	var rd io.Reader
	if r.body != nil {
		rd = strings.NewReader(mustJSON(t, r.body))
	}
	req, err := http.NewRequest(r.method, e.url+r.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", r.method, r.path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

func TestEveryRouteNeedsAValidKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	ctx := context.Background()
	id := e.submit(t, e.acme, "Say hello") // a real run, so a 401 is not a 404 in disguise
	e.wait(t, e.acme, id)
	e.do(t, e.acme, "PUT", "/v1/schedules/daily", map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily"}).
		expect(t, http.StatusOK)
	e.do(t, e.acme, "GET", "/v1/runs", nil).expect(t, http.StatusOK)
	revoked := e.acme
	if err := e.db.RevokeAPIKey(ctx, "acme-key"); err != nil {
		t.Fatal(err)
	}

	var tested []string
	for _, r := range v1Routes(id) {
		tested = append(tested, r.pattern)
	}
	slices.Sort(tested)
	if keyed := e.keyedPatterns(t); !slices.Equal(keyed, tested) {
		t.Fatalf("the routes that take a key are\n%v\nthis test sends\n%v", keyed, tested)
	}

	for _, auth := range []struct{ name, header string }{
		{"no Authorization", ""},
		{"a wrong key", "Bearer wrong"},
		{"an empty bearer", "Bearer "},
		{"Basic", "Basic xyz"},
		{"a bare key", revoked},
		{"a revoked key", "Bearer " + revoked},
		{"a revoked key, lower-case scheme", "bearer " + revoked},
	} {
		for _, r := range v1Routes(id) {
			res := e.doAuth(t, auth.header, r)
			what := auth.name + ": " + r.method + " " + r.path
			if res.status != http.StatusUnauthorized {
				t.Fatalf("%s: status %d, want 401: %s", what, res.status, res.body)
			}
			p := res.expectProblem(t, http.StatusUnauthorized)
			if p["type"] != "urn:kern:problem:unauthorized" {
				t.Errorf("%s: problem type %v", what, p["type"])
			}
			if h := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, h)
			}
			if revoked != "" && strings.Contains(string(res.body), revoked) {
				t.Errorf("%s: the answer echoes the key: %s", what, res.body)
			}
		}
	}

	// Nothing the refused requests asked for happened.
	all, err := e.db.ListRuns(ctx, run.ListParams{})
	if err != nil || len(all.Runs) != 1 {
		t.Fatalf("runs after the refused requests: %v, %v (want the 1 run)", all, err)
	}
	if out, err := e.db.GetRun(ctx, id); err != nil || out.Status != run.StatusCompleted {
		t.Fatalf("run after a refused cancel: %+v, %v", out, err)
	}
	if list, err := e.db.ListSchedules(ctx); err != nil || len(list) != 1 {
		t.Fatalf("schedules after a refused delete: %v, %v", list, err)
	}

	// The public routes need no key.
	for _, path := range []string{"/v1/openapi.json", "/healthz"} {
		res := e.doAuth(t, "", route{method: "GET", path: path}).expect(t, http.StatusOK)
		if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		res.object(t)
	}
	// globex's key still works: revoking acme's touched only acme's.
	e.do(t, e.globex, "GET", "/v1/runs", nil).expect(t, http.StatusOK)
}

// TestSameRunIDForTwoTenants: run ids are per tenant, so a second tenant's
// submit of an id the first uses is accepted as a run of its own (no 409,
// which would tell that the id exists), and each reads its own.
func TestSameRunIDForTwoTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	for _, k := range []string{e.acme, e.globex} {
		e.do(t, k, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "mine", "run_id": "order-7"}).
			expect(t, http.StatusAccepted)
	}
	for k, tenant := range map[string]string{e.acme: "acme", e.globex: "globex"} {
		got := e.wait(t, k, "order-7")
		if got["status"] != "completed" || got["input"] != "mine" {
			t.Fatalf("%s's order-7: %v", tenant, got)
		}
	}
	// Within a tenant the id is still taken.
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "again", "run_id": "order-7"}).
		expectProblem(t, http.StatusConflict)
}

// TestConcurrentIdempotentSubmitsAnswerOne202: of identical first submits
// with one idempotency key at the same instant, exactly one answers 202
// (it created the run) and every other 200 with that run.
func TestConcurrentIdempotentSubmitsAnswerOne202(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	const n = 8
	for round := range 5 {
		body := map[string]any{"agent": "assistant", "prompt": "once", "run_id": fmt.Sprintf("idem-%d", round),
			"idempotency_key": fmt.Sprintf("key-%d", round)}
		statuses := make(chan int, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				statuses <- e.do(t, e.acme, "POST", "/v1/runs", body).status
			}()
		}
		close(start)
		wg.Wait()
		close(statuses)
		accepted, ok := 0, 0
		for s := range statuses {
			switch s {
			case http.StatusAccepted:
				accepted++
			case http.StatusOK:
				ok++
			default:
				t.Fatalf("round %d: status %d", round, s)
			}
		}
		if accepted != 1 || ok != n-1 {
			t.Fatalf("round %d: %d answered 202 and %d 200; want exactly one 202", round, accepted, ok)
		}
	}
}
