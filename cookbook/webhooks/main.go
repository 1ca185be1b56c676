// Completion hooks and webhooks: a worker calls OnComplete once for every
// run of its agent that ends, and POSTs each run submitted WithWebhook to
// its URL, signed per Standard Webhooks. The receiver here is an HTTP
// server on 127.0.0.1 in this process; it checks what any receiver must:
//
//   - the signature: base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))
//     among the "v1,<sig>" entries of webhook-signature, compared in
//     constant time, over the body exactly as received;
//   - the timestamp: within 5 minutes of now, so an old delivery cannot be
//     replayed;
//   - the id: delivery is at least once (a retry after a lost answer sends
//     the same webhook-id again), so it remembers the ids it has handled.
//
// It runs offline by default (fake model, throwaway Postgres); see
// cookbook/background_execution for the environment variables.
//
//	go run ./cookbook/webhooks
package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/run"
)

func main() {
	if err := runAll(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()

	// The secret both sides know, in the whsec_<base64> form of the spec.
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)

	recv := newReceiver(secret)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	hookURL := "http://" + l.Addr().String() + "/kern"

	completed := make(chan *run.Output, 4)
	assistant := &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: env.Model, DB: env.DB}
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		WebhookSecret: secret,
		// Called once per run that ends, whatever ended it, off the run's
		// execution path: it may be slow, it does not hold a run slot.
		OnComplete: func(_ context.Context, out *run.Output) { completed <- out },
	}, assistant)
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(stopCtx)
	}()

	out, err := assistant.Run(ctx, "What is the capital of France?", agent.Background(true), agent.WithWebhook(hookURL))
	if err != nil {
		return err
	}
	fmt.Printf("submitted run %s with a webhook to %s\n", out.RunID, hookURL)

	select {
	case done := <-completed:
		fmt.Printf("OnComplete: run %s ended %s\n", done.RunID, done.Status)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%w: no OnComplete within 30s", demo.ErrScenario)
	}
	var got map[string]any
	select {
	case got = <-recv.runs:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%w: no webhook within 30s", demo.ErrScenario)
	}
	fmt.Printf("webhook verified: run %v, status %v, content %q\n", got["run_id"], got["status"], got["content"])

	// The delivery is on the run too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		final, err := assistant.GetRunOutput(ctx, out.RunID)
		if err != nil {
			return err
		}
		if w := final.Webhook; w != nil && w.Status != "pending" {
			fmt.Printf("Output.Webhook: %s after %d attempt(s)\n", w.Status, w.Attempts)
			if w.Status != "delivered" {
				return fmt.Errorf("%w: webhook %s: %s", demo.ErrScenario, w.Status, w.LastError)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: the delivery was not recorded", demo.ErrScenario)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// receiver verifies Standard Webhooks deliveries and passes on each run
// once.
type receiver struct {
	key  []byte
	mu   sync.Mutex
	seen map[string]bool // webhook-ids handled; a real receiver keeps them in its database
	runs chan map[string]any
}

func newReceiver(secret string) *receiver {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	return &receiver{key: key, seen: map[string]bool{}, runs: make(chan map[string]any, 4)}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 8<<20))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	if err := r.verify(id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body); err != nil {
		fmt.Println("receiver: rejected a delivery:", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	dup := r.seen[id]
	r.seen[id] = true
	r.mu.Unlock()
	if dup { // already handled: answer 2xx so it is not sent again
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var runJSON map[string]any
	if err := json.Unmarshal(body, &runJSON); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	r.runs <- runJSON
}

func (r *receiver) verify(id, ts, sigs string, body []byte) error {
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad webhook-timestamp")
	}
	if age := time.Since(time.Unix(sec, 0)); age > 5*time.Minute || age < -5*time.Minute {
		return errors.New("webhook-timestamp is more than 5 minutes away")
	}
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		if v, sig, ok := strings.Cut(s, ","); ok && v == "v1" {
			if got, err := base64.StdEncoding.DecodeString(sig); err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no valid signature")
}
