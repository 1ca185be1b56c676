package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/server"
)

// sseEvent is one event of a stream as a client reads it.
type sseEvent struct {
	id    int64
	typ   string
	data  string
	delta string // content.delta's text
}

// stream opens the run's event stream with the given Last-Event-ID ("" for
// none) and query, and returns the response and a reader of its events.
func (e *env) stream(t testing.TB, ctx context.Context, key, id, lastEventID, query string) (*http.Response, func() (sseEvent, bool, []string)) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/runs/"+id+"/events"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	// next reads the next event, and the comment lines before it, or a
	// block of comments alone (ev.id 0); false at the end of the stream.
	next := func() (sseEvent, bool, []string) {
		var ev sseEvent
		var comments []string
		seen := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if seen || len(comments) > 0 { // an event, or a comment block (a heartbeat)
					return ev, true, comments
				}
			case strings.HasPrefix(line, ":"):
				comments = append(comments, line)
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseInt(line[4:], 10, 64)
				seen = true
			case strings.HasPrefix(line, "event: "):
				ev.typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
				if ev.typ == "content.delta" {
					var d struct{ Delta string }
					_ = json.Unmarshal([]byte(ev.data), &d)
					ev.delta = d.Delta
				}
			}
		}
		return ev, false, comments
	}
	return res, next
}

// readAll reads the stream to its end.
func readAll(next func() (sseEvent, bool, []string)) []sseEvent {
	var all []sseEvent
	for {
		ev, ok, _ := next()
		if !ok {
			return all
		}
		if ev.id != 0 {
			all = append(all, ev)
		}
	}
}

// checkSeqs fails unless events have the seqs from..to, in order, once each.
func checkSeqs(t testing.TB, events []sseEvent, from int64) {
	t.Helper()
	for i, ev := range events {
		if ev.id != from+int64(i) {
			t.Fatalf("event %d has seq %d, want %d (seqs lost or repeated)", i, ev.id, from+int64(i))
		}
	}
}

func TestEventsStreamToTheEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, "[fake:drip=2ms,words=40] stream me")
	res, next := e.stream(t, t.Context(), e.acme, id, "", "")
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	events := readAll(next)
	checkSeqs(t, events, 1)
	if len(events) < 3 || events[0].typ != "run.started" || events[len(events)-1].typ != "run.completed" {
		t.Fatalf("events: %+v", events)
	}
	var content strings.Builder
	for _, ev := range events {
		content.WriteString(ev.delta)
	}
	run := e.do(t, e.acme, "GET", "/v1/runs/"+id, nil).object(t)
	if content.String() != run["content"] {
		t.Fatalf("deltas add up to %q, content is %q", content.String(), run["content"])
	}
}

// TestEventsResumeAfterADroppedConnection drops the stream mid-run, several
// times, and resumes with Last-Event-ID (and once with ?after=): every seq is
// seen exactly once.
func TestEventsResumeAfterADroppedConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, "[fake:drip=3ms,words=120,chunk=1] resume me")
	var all []sseEvent
	last := ""
	for drop := 0; ; drop++ {
		ctx, cancel := context.WithCancel(t.Context())
		query := ""
		if drop == 2 && last != "" { // once by ?after= instead of the header
			query, last = "?after="+last, ""
		}
		res, next := e.stream(t, ctx, e.acme, id, last, query)
		if res.StatusCode != 200 {
			t.Fatalf("resume answered %d", res.StatusCode)
		}
		ended := true
		for n := 0; ; n++ {
			if drop < 4 && n == 5 { // drop the connection mid-stream
				ended = false
				break
			}
			ev, ok, _ := next()
			if !ok {
				break
			}
			if ev.id == 0 {
				continue
			}
			all = append(all, ev)
			last = strconv.FormatInt(ev.id, 10)
		}
		cancel()
		res.Body.Close()
		if ended {
			break
		}
	}
	checkSeqs(t, all, 1)
	if all[len(all)-1].typ != "run.completed" {
		t.Fatalf("the resumed streams ended with %+v", all[len(all)-1])
	}
}

func TestEventsHeartbeatAndRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{HeartbeatInterval: 20 * time.Millisecond})
	id := e.submit(t, e.acme, approvalPrompt) // waits: no events for a while
	e.wait(t, e.acme, id)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, next := e.stream(t, ctx, e.acme, id, "", "")
	defer res.Body.Close()
	var pings int
	for pings < 2 {
		_, ok, comments := next()
		if !ok {
			t.Fatal("the stream of a waiting run ended")
		}
		for _, c := range comments {
			if c == ": ping" {
				pings++
			}
		}
	}
	e.do(t, e.acme, "GET", "/v1/runs/"+id+"/events?after=-1", nil).expectProblem(t, http.StatusBadRequest)
	e.do(t, e.acme, "GET", "/v1/runs/"+id+"/events?after=x", nil).expectProblem(t, http.StatusBadRequest)
	e.do(t, e.acme, "GET", "/v1/runs/nope/events", nil).expectProblem(t, http.StatusNotFound)
	e.do(t, e.globex, "GET", "/v1/runs/"+id+"/events", nil).expectProblem(t, http.StatusNotFound)
}

// TestThousandFollowersOfOneRun: 1,000 concurrent streams of one run all see
// the whole run, in order, once.
func TestThousandFollowersOfOneRun(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, approvalPrompt) // holds still (waiting) while the followers connect
	w := e.wait(t, e.acme, id)
	const followers = 1000
	tr := &http.Transport{MaxIdleConnsPerHost: followers, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var connected, finished sync.WaitGroup
	connected.Add(followers)
	finished.Add(followers)
	errs := make(chan error, followers)
	for i := range followers {
		go func() {
			defer finished.Done()
			req, _ := http.NewRequestWithContext(t.Context(), "GET", e.url+"/v1/runs/"+id+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+e.acme)
			res, err := client.Do(req)
			if err != nil {
				connected.Done()
				errs <- fmt.Errorf("follower %d: %w", i, err)
				return
			}
			defer res.Body.Close()
			sc := bufio.NewScanner(res.Body)
			var ids []int64
			first := true
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "id: ") {
					n, _ := strconv.ParseInt(line[4:], 10, 64)
					ids = append(ids, n)
				}
				if first && strings.HasPrefix(line, "event: run.waiting") {
					first = false
					connected.Done()
				}
			}
			if first {
				connected.Done()
			}
			for j, n := range ids {
				if n != int64(j+1) {
					errs <- fmt.Errorf("follower %d: seqs %v", i, ids)
					return
				}
			}
			if len(ids) == 0 {
				errs <- fmt.Errorf("follower %d: no events", i)
			}
			errs <- nil
		}()
	}
	connected.Wait()
	call := w["waiting"].([]any)[0].(map[string]any)["id"].(string)
	e.do(t, e.acme, "POST", "/v1/runs/"+id+"/tool-calls/"+call+"/approve", nil).expect(t, http.StatusOK)
	finished.Wait()
	close(errs)
	var total int
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		total++
	}
	if total != followers {
		t.Fatalf("%d followers finished, want %d", total, followers)
	}
}

// A stream of a finished run resumed at (or past) its terminal event has
// nothing to send: 204, on which EventSource stops reconnecting, not a 200
// that ends at once (a reconnect every second, for ever). One event short
// of the end, the terminal event comes again.
func TestEventsResumedAtTheEndAnswer204(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	id := e.submit(t, e.acme, "finish me")
	res, next := e.stream(t, t.Context(), e.acme, id, "", "")
	events := readAll(next)
	res.Body.Close()
	if len(events) == 0 || events[len(events)-1].typ != "run.completed" {
		t.Fatalf("events: %+v", events)
	}
	last := events[len(events)-1].id
	for _, c := range []struct{ lastEventID, query string }{
		{strconv.FormatInt(last, 10), ""},
		{"", "?after=" + strconv.FormatInt(last, 10)},
		{"", "?after=" + strconv.FormatInt(last+5, 10)},
	} {
		res, next := e.stream(t, t.Context(), e.acme, id, c.lastEventID, c.query)
		rest := readAll(next)
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || len(rest) != 0 {
			t.Errorf("resumed with Last-Event-ID %q, query %q: %d with %d events, want 204", c.lastEventID, c.query, res.StatusCode, len(rest))
		}
	}
	res, next = e.stream(t, t.Context(), e.acme, id, strconv.FormatInt(last-1, 10), "")
	rest := readAll(next)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(rest) != 1 || rest[0].id != last || rest[0].typ != "run.completed" {
		t.Errorf("resumed one short of the end: %d, %+v", res.StatusCode, rest)
	}
}
