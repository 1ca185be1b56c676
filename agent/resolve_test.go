package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// resolveCalls is how many model calls the connection tests make: enough
// that per-call clients would be unmistakable against at most a couple of
// connections.
const resolveCalls = 20

// startResolveFake serves a fake model and points OPENAI_BASE_URL at it,
// with OPENAI_API_KEY unset: a local endpoint must not need one.
func startResolveFake(t *testing.T) *fakellm.Server {
	t.Helper()
	fake := fakellm.New()
	base, stop, err := fake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Setenv("OPENAI_BASE_URL", base)
	t.Setenv("OPENAI_API_KEY", "")
	return fake
}

// streamOnce makes one model call and checks it came back whole.
func streamOnce(t *testing.T, m Model) {
	t.Helper()
	req := &ModelRequest{Messages: []Message{{Role: "user", Content: "What is the capital of France?"}}}
	resp, err := m.Stream(t.Context(), req, func(string) {})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if !strings.Contains(resp.Content, "Paris") || resp.FinishReason == "" {
		t.Fatalf("Stream = %q (finish %q), want the fake's answer about Paris", resp.Content, resp.FinishReason)
	}
}

func TestResolveReusesOneConnection(t *testing.T) {
	fake := startResolveFake(t)
	var cache modelCache
	for range resolveCalls {
		// As a run does: resolve, then call, every time.
		m, err := cache.get(OpenAIChat{ID: "fake-model"})
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		streamOnce(t, m)
	}
	if got := fake.Count(); got != resolveCalls {
		t.Fatalf("fake saw %d requests, want %d", got, resolveCalls)
	}
	// Sequential calls on one pooled client reuse one connection; allow one
	// more in case the server closed a connection the client then replaced.
	if got := fake.Connections(); got > 2 {
		t.Fatalf("%d model calls opened %d TCP connections, want 1 (a client per call?)", resolveCalls, got)
	}
	t.Logf("%d model calls, %d TCP connection(s)", resolveCalls, fake.Connections())
}

// TestResolveDirectStreamConnectionPerCall pins the documented cost of
// calling OpenAIChat.Stream with a nil Client outside an Agent — and shows
// that the connection count above would catch a per-call client.
func TestResolveDirectStreamConnectionPerCall(t *testing.T) {
	fake := startResolveFake(t)
	for range resolveCalls {
		streamOnce(t, OpenAIChat{ID: "fake-model"})
	}
	if got := fake.Connections(); got != resolveCalls {
		t.Fatalf("%d direct calls opened %d TCP connections, want one each", resolveCalls, got)
	}
	// Resolve once, then call: the way out for code without an Agent.
	m, err := OpenAIChat{ID: "fake-model"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	before := fake.Connections()
	for range resolveCalls {
		streamOnce(t, m)
	}
	if got := fake.Connections() - before; got > 2 {
		t.Fatalf("%d calls on a resolved OpenAIChat opened %d connections, want 1", resolveCalls, got)
	}
}

func TestResolveNoKeyNoBaseURL(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	t.Setenv("OPENAI_BASE_URL", "")
	var cache modelCache
	_, err := cache.get(OpenAIChat{ID: "gpt-5-mini"})
	if !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("get without key or base URL = %v, want run.ErrInvalidArgument", err)
	}
	for _, want := range []string{"OPENAI_API_KEY", "OPENAI_BASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := (OpenAIChat{ID: "gpt-5-mini"}).Resolve(); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("Resolve without key or base URL = %v, want run.ErrInvalidArgument", err)
	}
	// A direct call fails the same way, as a ModelError that is not retried.
	_, err = OpenAIChat{ID: "gpt-5-mini"}.Stream(t.Context(), &ModelRequest{}, func(string) {})
	if me, ok := errors.AsType[*ModelError](err); !ok || me.Retryable || !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("Stream without key or base URL = %#v, want a non-retryable ModelError wrapping ErrInvalidArgument", err)
	}
	// Nothing failed is cached: setting the key afterwards is enough.
	t.Setenv("OPENAI_API_KEY", "sk-test")
	if _, err := cache.get(OpenAIChat{ID: "gpt-5-mini"}); err != nil {
		t.Fatalf("get after setting OPENAI_API_KEY: %v", err)
	}
}

// authRecorder serves the fake model and remembers the Authorization
// header of every request.
type authRecorder struct {
	mu    sync.Mutex
	auths []string
}

func (a *authRecorder) start(t *testing.T) string {
	t.Helper()
	fake := fakellm.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auths = append(a.auths, r.Header.Get("Authorization"))
		a.mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

func (a *authRecorder) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.auths[len(a.auths)-1]
}

func TestResolveBaseURLWithoutKey(t *testing.T) {
	var rec authRecorder
	t.Setenv("OPENAI_BASE_URL", rec.start(t))
	t.Setenv("OPENAI_API_KEY", "")
	var cache modelCache
	m, err := cache.get(OpenAIChat{ID: "fake-model"})
	if err != nil {
		t.Fatalf("get with OPENAI_BASE_URL and no key: %v", err)
	}
	streamOnce(t, m)
	if got := rec.last(); got != "" {
		t.Errorf("Authorization = %q without a key, want none", got)
	}

	// A key, when there is one, is sent to the local endpoint too; the
	// changed environment gets a new client.
	t.Setenv("OPENAI_API_KEY", "local-key")
	m2, err := cache.get(OpenAIChat{ID: "fake-model"})
	if err != nil {
		t.Fatal(err)
	}
	if m2.(OpenAIChat).Client == m.(OpenAIChat).Client {
		t.Error("changed OPENAI_API_KEY kept the old client")
	}
	streamOnce(t, m2)
	if got := rec.last(); got != "Bearer local-key" {
		t.Errorf("Authorization = %q, want %q", got, "Bearer local-key")
	}
}

// stubModel is a Model that is not an OpenAIChat.
type stubModel struct{ id string }

func (stubModel) Stream(context.Context, *ModelRequest, func(string)) (*ModelResponse, error) {
	return &ModelResponse{}, nil
}

func TestResolveKeepsModels(t *testing.T) {
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1") // never dialled
	t.Setenv("OPENAI_API_KEY", "")
	var cache modelCache

	stub := stubModel{id: "x"}
	if got, err := cache.get(stub); err != nil || got != Model(stub) {
		t.Errorf("get(non-OpenAIChat) = %v, %v; want it unchanged", got, err)
	}
	own := OpenAIChat{Client: NewOpenAIClient("k", "http://127.0.0.1:1/v1"), ID: "m"}
	if got, err := cache.get(own); err != nil || got != Model(own) {
		t.Errorf("get(OpenAIChat with Client) = %v, %v; want it unchanged", got, err)
	}

	// A changed Model value is honoured, on the same client.
	a, err := cache.get(OpenAIChat{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cache.get(&OpenAIChat{ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := a.(OpenAIChat), b.(OpenAIChat)
	if ca.ID != "a" || cb.ID != "b" {
		t.Errorf("IDs = %q, %q; want a, b", ca.ID, cb.ID)
	}
	if ca.Client == nil || ca.Client != cb.Client {
		t.Error("two models on one environment got different clients")
	}
}

func TestResolveConcurrent(t *testing.T) {
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1") // never dialled
	t.Setenv("OPENAI_API_KEY", "")
	var cache modelCache
	const n = 16
	got := make([]Model, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m, err := cache.get(OpenAIChat{ID: "m"})
			if err != nil {
				t.Error(err)
			}
			got[i] = m
		})
	}
	wg.Wait()
	for i := range got {
		if got[i].(OpenAIChat).Client != got[0].(OpenAIChat).Client {
			t.Fatal("concurrent first calls built more than one client")
		}
	}
}
