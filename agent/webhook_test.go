package agent_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verifyStandardWebhook is a reference check of the Standard Webhooks
// scheme, written from the spec, not from kern's code: the signed content
// is "<webhook-id>.<webhook-timestamp>.<body>", the key the base64 after
// "whsec_", the signature base64(HMAC-SHA256), sent as space-separated
// "v1,<signature>" entries; the timestamp must be within 5 minutes.
func verifyStandardWebhook(secret string, h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp too far from now")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// delivery is one request a test receiver got.
type delivery struct {
	header http.Header
	body   []byte
}

// receiver is an httptest webhook endpoint answering with status(n) for
// its n-th request (1-based).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []delivery
	code func(n int) int
}

func newReceiver(t *testing.T, code func(n int) int) *receiver {
	r := &receiver{code: code}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivery{req.Header.Clone(), body})
		n := len(r.got)
		r.mu.Unlock()
		c := r.code(n)
		w.WriteHeader(c)
		if c >= 300 {
			_, _ = io.WriteString(w, "receiver says no")
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// submitWithWebhook submits a background run that posts to url, then
// starts a worker with cfg. Until WithWebhook is accepted at submit, the
// URL is set on the row before any worker can take the run.
func submitWithWebhook(t *testing.T, cfg agent.WorkerConfig, prompt, url string) (*agent.Agent, string) {
	t.Helper()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "hooked", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := a.Run(ctx, prompt, agent.Background(true), agent.WithWebhook(url))
	if errors.Is(err, run.ErrInvalidArgument) {
		out, err = a.Run(ctx, prompt, agent.Background(true))
		if err == nil {
			_, err = d.Pool().Exec(ctx, `UPDATE kern_run SET webhook_url = $2 WHERE id = $1`, out.RunID, url)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	kerntest.Worker(t, d, cfg, a)
	return a, out.RunID
}

// waitWebhook waits until the run's delivery is no longer pending.
func waitWebhook(t *testing.T, a *agent.Agent, runID string) *run.Output {
	t.Helper()
	var out *run.Output
	waitFor(t, 30*time.Second, "the webhook delivery to settle", func() bool {
		var err error
		out, err = a.GetRunOutput(context.Background(), runID)
		return err == nil && out.Webhook != nil && out.Webhook.Status != "pending"
	})
	return out
}

func fastWebhooks(maxAttempts int) agent.WorkerConfig {
	cfg := agent.WorkerConfig{WebhookSecret: testWebhookSecret}
	agent.SetWebhookTestKnobs(&cfg, maxAttempts, 50*time.Millisecond, 2*time.Second, 50*time.Millisecond)
	return cfg
}

// TestWebhookSignedFinalRun: the webhook is the final run, in the API's
// JSON, signed per Standard Webhooks, delivered once.
func TestWebhookSignedFinalRun(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusNoContent })
	a, id := submitWithWebhook(t, agent.WorkerConfig{WebhookSecret: testWebhookSecret}, "hello", recv.URL+"/hook")
	out := waitWebhook(t, a, id)
	if out.Status != run.StatusCompleted || *out.Webhook != (run.WebhookDelivery{URL: recv.URL + "/hook", Status: "delivered", Attempts: 1}) {
		t.Fatalf("run %s, webhook %+v", out.Status, *out.Webhook)
	}
	got := recv.deliveries()
	if len(got) != 1 {
		t.Fatalf("%d deliveries, want 1", len(got))
	}
	if err := verifyStandardWebhook(testWebhookSecret, got[0].header, got[0].body); err != nil {
		t.Fatalf("signature: %v (headers %v)", err, got[0].header)
	}
	if h := got[0].header; h.Get("webhook-id") != "msg_"+id || h.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", h)
	}
	if err := verifyStandardWebhook("whsec_"+base64.StdEncoding.EncodeToString([]byte("another key")), got[0].header, got[0].body); err == nil {
		t.Error("the signature verifies with another key")
	}
	want, err := db.MarshalRun(out)
	if err != nil {
		t.Fatal(err)
	}
	want = append([]byte(`{"tenant_id":"",`), want[1:]...) // the operator's run: no tenant
	if string(got[0].body) != string(want) {
		t.Errorf("body\n%s\nwant the final run\n%s", got[0].body, want)
	}
	var body map[string]any
	if err := json.Unmarshal(got[0].body, &body); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"run_id": id, "status": "completed", "agent": "hooked", "content": out.Content, "input": "hello"} {
		if body[k] != v {
			t.Errorf("body[%q] = %v, want %v", k, body[k], v)
		}
	}
	if body["finished_at"] == nil || body["metrics"] == nil {
		t.Errorf("body lacks finished_at or metrics: %s", got[0].body)
	}
}

// TestWebhookRetriedUntilDelivered: a 500, another, then a 200: delivered
// on the third attempt, the same webhook-id every time.
func TestWebhookRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	a, id := submitWithWebhook(t, fastWebhooks(10), "hello", recv.URL)
	out := waitWebhook(t, a, id)
	if *out.Webhook != (run.WebhookDelivery{URL: recv.URL, Status: "delivered", Attempts: 3}) {
		t.Fatalf("webhook %+v", *out.Webhook)
	}
	got := recv.deliveries()
	if len(got) != 3 {
		t.Fatalf("%d deliveries, want 3", len(got))
	}
	for _, g := range got {
		if err := verifyStandardWebhook(testWebhookSecret, g.header, g.body); err != nil || g.header.Get("webhook-id") != "msg_"+id {
			t.Errorf("attempt: %v, id %q", err, g.header.Get("webhook-id"))
		}
	}
}

// TestWebhookDeadEndpointFails: an endpoint that always fails, and one
// nobody listens on, end "failed" after MaxAttempts, the last error shown.
func TestWebhookDeadEndpointFails(t *testing.T) {
	t.Parallel()
	t.Run("500", func(t *testing.T) {
		t.Parallel()
		recv := newReceiver(t, func(int) int { return http.StatusInternalServerError })
		a, id := submitWithWebhook(t, fastWebhooks(3), "hello", recv.URL)
		out := waitWebhook(t, a, id)
		if w := out.Webhook; w.Status != "failed" || w.Attempts != 3 || w.LastError != "HTTP 500: receiver says no" {
			t.Fatalf("webhook %+v", *w)
		}
		if n := len(recv.deliveries()); n != 3 {
			t.Fatalf("%d deliveries, want 3", n)
		}
	})
	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + l.Addr().String() + "/hook"
		l.Close()
		a, id := submitWithWebhook(t, fastWebhooks(3), "hello", url)
		out := waitWebhook(t, a, id)
		if w := out.Webhook; w.Status != "failed" || w.Attempts != 3 || !strings.Contains(w.LastError, "refused") {
			t.Fatalf("webhook %+v", *w)
		}
	})
}

// TestWebhookWithoutSecretFails: a worker with no WebhookSecret sends
// nothing unsigned; the delivery fails, saying why.
func TestWebhookWithoutSecretFails(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	cfg := fastWebhooks(2)
	cfg.WebhookSecret = ""
	a, id := submitWithWebhook(t, cfg, "hello", recv.URL)
	out := waitWebhook(t, a, id)
	if w := out.Webhook; w.Status != "failed" || w.Attempts != 2 || w.LastError != "no WebhookSecret configured" {
		t.Fatalf("webhook %+v", *w)
	}
	if n := len(recv.deliveries()); n != 0 {
		t.Fatalf("%d unsigned deliveries", n)
	}
}

// TestWebhookCancelledBeforeStartAndOnComplete: a run cancelled before it
// started gets its webhook and its OnComplete too; a run without a webhook
// reads with a nil Output.Webhook.
func TestWebhookCancelledBeforeStartAndOnComplete(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	got := newCompletions()
	cfg := fastWebhooks(3)
	cfg.OnComplete = got.hook("w")
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	a := &agent.Agent{Name: "hooked", Model: model, DB: d}
	ctx := kerntest.Context(t, 30*time.Second)
	if ok, err := a.CancelRun(ctx, "early"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	out, err := a.Run(ctx, "never asked", agent.Background(true), agent.WithRunID("early"), agent.WithWebhook(recv.URL))
	if errors.Is(err, run.ErrInvalidArgument) {
		out, err = a.Run(ctx, "never asked", agent.Background(true), agent.WithRunID("early"))
		if err == nil {
			_, err = d.Pool().Exec(ctx, `UPDATE kern_run SET webhook_url = $2 WHERE id = $1`, out.RunID, recv.URL)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	plain, err := a.Run(ctx, "no hook", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	kerntest.Worker(t, d, cfg, a)
	final := waitWebhook(t, a, "early")
	if final.Status != run.StatusCancelled || final.Webhook.Status != "delivered" {
		t.Fatalf("run %s, webhook %+v", final.Status, *final.Webhook)
	}
	var body map[string]any
	if err := json.Unmarshal(recv.deliveries()[0].body, &body); err != nil || body["status"] != "cancelled" {
		t.Fatalf("body %v (%v)", body, err)
	}
	if p := mustWait(t, a, plain.RunID); p.Webhook != nil {
		t.Fatalf("a run without a webhook has %+v", *p.Webhook)
	}
	waitFor(t, 10*time.Second, "both completions", func() bool { return len(got.of("early")) == 1 && len(got.of(plain.RunID)) == 1 })
}
