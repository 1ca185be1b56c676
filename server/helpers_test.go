package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/server"
)

// env is one test's API: a database, a fake model, the agent "assistant"
// (with a tool "transfer" that needs approval) served by a worker, the API
// over HTTP, and a key for each of the tenants "acme" and "globex".
type env struct {
	db        *db.DB
	model     *fakellm.Server
	agent     *agent.Agent
	url       string // the API's base URL
	acme      string // acme's key
	globex    string // globex's key
	transfers atomic.Int64
}

func newEnv(t testing.TB, cfg server.Config) *env {
	t.Helper()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	e := &env{db: d, model: srv}
	e.agent = &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: model, DB: d,
		Tools: []agent.Tool{{
			Name: "transfer", Description: "Moves money.", NeedsApproval: true,
			Parameters: map[string]any{"type": "object"},
			Call: func(context.Context, json.RawMessage) (string, error) {
				e.transfers.Add(1)
				return "done", nil
			},
		}}}
	kerntest.Worker(t, d, agent.WorkerConfig{}, e.agent)
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	api, err := server.New(d, cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(api.Close)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	ctx := context.Background()
	if e.acme, err = d.CreateAPIKey(ctx, "acme", "acme-key"); err != nil {
		t.Fatal(err)
	}
	if e.globex, err = d.CreateAPIKey(ctx, "globex", "globex-key"); err != nil {
		t.Fatal(err)
	}
	return e
}

// response is an HTTP answer, its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v, failing the test if it does not.
func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// object is the body as a JSON object.
func (r response) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

// do sends method path with key (none when empty) and body (JSON-encoded
// unless it is a string or []byte, sent as is).
func (e *env) do(t testing.TB, key, method, path string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// expect fails the test unless r has status.
func (r response) expect(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// expectProblem fails the test unless r is a problem with status.
func (r response) expectProblem(t testing.TB, status int) map[string]any {
	t.Helper()
	r.expect(t, status)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json: %s", ct, r.body)
	}
	p := r.object(t)
	if p["status"] != float64(status) || p["type"] == "" || p["title"] == "" {
		t.Fatalf("problem %v lacks type, title or the status %d", p, status)
	}
	return p
}

// submit submits prompt as key's tenant and returns the run's id.
func (e *env) submit(t testing.TB, key, prompt string) string {
	t.Helper()
	r := e.do(t, key, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": prompt}).expect(t, http.StatusAccepted)
	id, _ := r.object(t)["run_id"].(string)
	if id == "" {
		t.Fatalf("no run_id in %s", r.body)
	}
	return id
}

// wait waits, through the API, until the run is terminal or waiting.
func (e *env) wait(t testing.TB, key, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		run := e.do(t, key, "GET", "/v1/runs/"+id+"/wait?timeout=10s", nil).expect(t, http.StatusOK).object(t)
		switch run["status"] {
		case "completed", "error", "cancelled", "waiting":
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is still %v", id, run["status"])
		}
	}
}

// approvalPrompt makes the model call transfer once, then answer.
const approvalPrompt = `fake-plan: {"turns": [[{"name": "transfer", "arguments": {"amount": 5}}]], "answer": "moved"}`

// quietLogger shows the server's warnings and errors only.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// waitForModel waits until the model has received n requests.
func waitForModel(t testing.TB, e *env, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := e.model.WaitRequests(ctx, n); err != nil {
		t.Fatalf("waiting for %d model requests: %v", n, err)
	}
}
