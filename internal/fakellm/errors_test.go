package fakellm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

func TestErrorReplies(t *testing.T) {
	t.Parallel()
	reply := Reply{Status: http.StatusTooManyRequests, ErrorMessage: "slow down", RetryAfter: "2"}
	s, client := start(t, constant(reply))

	for _, stream := range []bool{false, true} {
		var err error
		if stream {
			var st *openai.ChatCompletionStream
			st, err = client.CreateChatCompletionStream(timeout(t, 5*time.Second), userRequest("hi", true))
			if st != nil && err == nil {
				st.Close()
			}
		} else {
			_, err = client.CreateChatCompletion(timeout(t, 5*time.Second), userRequest("hi", false))
		}
		apiErr, ok := errors.AsType[*openai.APIError](err)
		if !ok {
			t.Fatalf("stream=%v: err = %#v, want *openai.APIError", stream, err)
		}
		if apiErr.HTTPStatusCode != 429 || apiErr.Message != "slow down" || apiErr.Type != "requests" || apiErr.Code != "rate_limit_exceeded" {
			t.Errorf("stream=%v: APIError = %+v", stream, apiErr)
		}
	}
	for _, r := range s.Requests() {
		if r.Status != 429 || !r.Completed || r.ClientGone {
			t.Errorf("logged request = %+v", r)
		}
	}

	// go-openai does not expose headers on errors; check Retry-After raw.
	base := strings.TrimSuffix(extraListener(t, s), "/")
	resp, err := http.Post(base+"/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || body.Error.Message != "slow down" {
		t.Errorf("status %d, Retry-After %q, body %+v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// extraListener starts a second listener for s (the server is a plain
// handler, so several listeners may share it) and returns its base URL.
func extraListener(t *testing.T, s *Server) string {
	t.Helper()
	base, stop, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return base
}

func TestDefaultErrorMessageAndBadInput(t *testing.T) {
	t.Parallel()
	s, client := start(t, constant(Reply{Status: 503}))
	_, err := client.CreateChatCompletion(timeout(t, 5*time.Second), userRequest("hi", false))
	apiErr, ok := errors.AsType[*openai.APIError](err)
	if !ok || apiErr.HTTPStatusCode != 503 || apiErr.Message != "Service Unavailable" || apiErr.Type != "server_error" {
		t.Errorf("err = %#v", err)
	}

	base := extraListener(t, s)
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/chat/completions", `{not json`, 400},
		{"GET", "/chat/completions", ``, 405},
		{"GET", "/nope", ``, 404},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error struct{ Message string } }
		decErr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || decErr != nil || body.Error.Message == "" {
			t.Errorf("%s %s: status %d, body %+v, decode err %v", tc.method, tc.path, resp.StatusCode, body, decErr)
		}
	}
	if s.Count() != 1 {
		t.Errorf("Count = %d: malformed requests must not be logged", s.Count())
	}

	models, err := client.ListModels(timeout(t, 5*time.Second))
	if err != nil || len(models.Models) == 0 {
		t.Errorf("ListModels = %+v, %v", models, err)
	}
}

// TestClientGone cancels the client during each kind of wait and checks the
// server notices within 500 ms.
func TestClientGone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stream bool
		reply  Reply
	}{
		{"hang stream", true, Reply{Hang: true}},
		{"hang json", false, Reply{Hang: true}},
		{"latency", true, Reply{Latency: time.Hour}},
		{"drip stream", true, Reply{Content: LoremWords(100), Drip: time.Hour}},
		{"drip json", false, Reply{Content: LoremWords(100), Drip: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, client := start(t, constant(tc.reply))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				if tc.stream {
					st, err := client.CreateChatCompletionStream(ctx, userRequest("hi", true))
					if err == nil {
						_, err = st.Recv()
						for err == nil {
							_, err = st.Recv()
						}
						st.Close()
					}
					errc <- err
					return
				}
				_, err := client.CreateChatCompletion(ctx, userRequest("hi", false))
				errc <- err
			}()
			if err := s.WaitRequests(timeout(t, 5*time.Second), 1); err != nil {
				t.Fatal(err)
			}
			if r, _ := s.Request(1); r.ClientGone || !r.DoneAt.IsZero() {
				t.Fatalf("in-flight request = %+v", r)
			}
			cancelAt := time.Now() // before cancel: the server may notice at once
			cancel()
			r, err := s.WaitClientGone(timeout(t, 5*time.Second), 1)
			if err != nil {
				t.Fatalf("WaitClientGone: %v", err)
			}
			// Generous bounds: this checks the disconnect is noticed while
			// waiting (not after the hour-long wait), on a loaded CI machine.
			const prompt = 3 * time.Second
			if lag := time.Since(cancelAt); lag > prompt {
				t.Errorf("WaitClientGone returned %v after the cancel", lag)
			}
			if !r.ClientGone || r.Completed || r.ClientGoneAt.Before(cancelAt) || r.ClientGoneAt.Sub(cancelAt) > prompt {
				t.Errorf("request = %+v (cancel at %v)", r, cancelAt)
			}
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("client error = %v, want context.Canceled", err)
			}
		})
	}
}

func TestWaitErrors(t *testing.T) {
	t.Parallel()
	s, client := start(t, nil)
	s.SetLogLimit(3)
	for range 5 {
		if _, err := client.CreateChatCompletion(timeout(t, 5*time.Second), userRequest("hi", false)); err != nil {
			t.Fatal(err)
		}
	}
	if s.Count() != 5 {
		t.Errorf("Count = %d", s.Count())
	}
	reqs := s.Requests()
	if len(reqs) != 3 || reqs[0].Seq != 3 || reqs[2].Seq != 5 {
		t.Errorf("log = %+v", reqs)
	}
	if _, err := s.WaitClientGone(timeout(t, 5*time.Second), 1); !errors.Is(err, ErrEvicted) {
		t.Errorf("evicted: err = %v", err)
	}
	if _, err := s.WaitClientGone(timeout(t, 5*time.Second), 5); !errors.Is(err, ErrFinished) {
		t.Errorf("finished: err = %v", err)
	}
	short := timeout(t, 20*time.Millisecond)
	if _, err := s.WaitClientGone(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("any: err = %v", err)
	}
	if err := s.WaitRequests(short, 6); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRequests: err = %v", err)
	}
	s.SetLogLimit(1)
	if reqs := s.Requests(); len(reqs) != 1 || reqs[0].Seq != 5 {
		t.Errorf("log after shrink = %+v", reqs)
	}
}
