package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
	"github.com/kern-go/kern/server"
)

// httpAPI: the HTTP API's figures. Submit latency over HTTP against the Go
// API's in the same sitting (alternating, one submit at a time, the same
// database); how late 1,000 SSE followers of one run get each event; and
// what an idle follower costs a `kern serve` process (a subprocess, so
// only the server's memory is counted).
func httpAPI(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	api, err := server.New(d, server.Config{})
	if err != nil {
		return nil, err
	}
	defer api.Close() // River UI's background services, before the pool closes
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := api.HTTPServer(ln.Addr().String())
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	key, err := d.CreateAPIKey(ctx, "bench", "bench-key")
	if err != nil {
		return nil, err
	}

	results, err := httpSubmit(ctx, d, base, key, cfg)
	if err != nil {
		return nil, err
	}
	for _, n := range []int{100, 1000} {
		lag, err := sseLag(ctx, d, base, key, n, max(cfg.Samples/10, 20))
		if err != nil {
			return nil, err
		}
		results = append(results, lag...)
	}
	if env.KernCLI != nil {
		mem, err := sseMemory(ctx, env, d, 1000)
		if err != nil {
			return nil, err
		}
		results = append(results, mem...)
	}
	return results, nil
}

// httpSubmit alternates a Go submit (db.SubmitRun, what agent.Run with
// Background(true) does) and an HTTP one (POST /v1/runs on a keep-alive
// connection), so both see the same machine.
func httpSubmit(ctx context.Context, d *db.DB, base, key string, cfg Config) ([]Result, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	n := max(cfg.Samples, 50)
	goLat, httpLat := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	body := []byte(`{"agent":"bench-http","prompt":"hello"}`)
	for i := range n + 10 { // the first 10 of each warm up
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id.String(), AgentName: "bench-http", Input: "hello", Enqueue: true}); err != nil {
			return nil, err
		}
		goTook := time.Since(start)

		req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/runs", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		start = time.Now()
		res, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		httpTook := time.Since(start)
		if res.StatusCode != http.StatusAccepted {
			return nil, fmt.Errorf("http submit: status %d", res.StatusCode)
		}
		if i >= 10 {
			goLat, httpLat = append(goLat, goTook), append(httpLat, httpTook)
		}
	}
	note := fmt.Sprintf("%d each, alternating, one at a time; HTTP: key lookup, JSON, SubmitRun, JSON", n)
	return []Result{
		{"submit p50, Go API", ms(pct(goLat, 50)), note},
		{"submit p50, HTTP API", ms(pct(httpLat, 50)), fmt.Sprintf("+%s over Go", ms(pct(httpLat, 50)-pct(goLat, 50)))},
		{"submit p99, Go API", ms(pct(goLat, 99)), ""},
		{"submit p99, HTTP API", ms(pct(httpLat, 99)), ""},
	}, nil
}

// sseLag plays the worker of one run (claim, then one content append at a
// time, as eventLag does) while followers follow it over SSE; each lag is
// from the append's start to a follower having read the event. The next
// append waits for every follower to have read the last.
func sseLag(ctx context.Context, d *db.DB, base, key string, followers, appends int) ([]Result, error) {
	id := fmt.Sprintf("sse-lag-%d", followers)
	tenant, err := d.ForTenant("bench")
	if err != nil {
		return nil, err
	}
	if _, err := tenant.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "bench-http", Input: "x"}); err != nil {
		return nil, err
	}
	store := d.Engine(engine.Key{})
	claim, err := store.StartRun(ctx, engine.RunKey("bench", id), nil) // the executing side names a tenant's run by its key
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: followers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var mu sync.Mutex
	var lags []time.Duration
	var appendStart time.Time
	var read sync.WaitGroup // one per follower per append
	connected := make(chan error, followers)
	for range followers {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/runs/"+id+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			res, err := client.Do(req)
			if err != nil {
				connected <- err
				return
			}
			defer res.Body.Close()
			sc := bufio.NewScanner(res.Body)
			first := true
			for sc.Scan() {
				line := sc.Text()
				if !strings.HasPrefix(line, "event: ") {
					continue
				}
				if first { // run.started: connected
					first = false
					connected <- nil
					continue
				}
				if line == "event: content.delta" {
					mu.Lock()
					lags = append(lags, time.Since(appendStart))
					mu.Unlock()
					read.Done()
				}
			}
		}()
	}
	for range followers {
		select {
		case err := <-connected:
			if err != nil {
				return nil, err
			}
		case <-time.After(60 * time.Second):
			return nil, fmt.Errorf("sse lag: followers did not connect")
		}
	}
	for i := range appends {
		read.Add(followers)
		mu.Lock()
		appendStart = time.Now()
		mu.Unlock()
		if err := store.AppendContent(ctx, claim.Fence, claim.EventSeq+1+int64(i), "x"); err != nil {
			return nil, err
		}
		waited := make(chan struct{})
		go func() { read.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("sse lag: append %d not read by every follower", i)
		}
	}
	if err := store.FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted}); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("%d followers of one run over SSE, %d appends; from the appending UPDATE to each follower reading it", followers, appends)
	return []Result{
		{fmt.Sprintf("SSE lag p50, %d followers", followers), ms(pct(lags, 50)), note},
		{fmt.Sprintf("SSE lag p99, %d followers", followers), ms(pct(lags, 99)), ""},
	}, nil
}

// sseMemory opens followers idle streams of one waiting run on a `kern
// serve` subprocess and reads its RSS before and after.
func sseMemory(ctx context.Context, env Env, d *db.DB, followers int) ([]Result, error) {
	bin, err := env.KernCLI()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin, "serve", "--addr", addr, "--database-url", d.Pool().Config().ConnString())
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	key, err := d.CreateAPIKey(ctx, "bench-mem", "bench-mem-key")
	if err != nil {
		return nil, err
	}
	tenant, err := d.ForTenant("bench-mem")
	if err != nil {
		return nil, err
	}
	if _, err := tenant.SubmitRun(ctx, db.SubmitParams{RunID: "sse-idle", AgentName: "bench-http", Input: "x"}); err != nil {
		return nil, err
	}
	store := d.Engine(engine.Key{})
	if _, err := store.StartRun(ctx, engine.RunKey("bench-mem", "sse-idle"), nil); err != nil {
		return nil, err
	}
	base := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; {
		res, err := http.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sse memory: kern serve did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// One stream first, so the hub and its reader are counted in "before".
	open := func(n int) ([]*http.Response, error) {
		tr := &http.Transport{MaxIdleConnsPerHost: n}
		client := &http.Client{Transport: tr}
		var out []*http.Response
		for range n {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/runs/sse-idle/events", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			res, err := client.Do(req)
			if err != nil {
				return out, err
			}
			// Read to the run.started event: the stream is set up.
			br := bufio.NewReader(res.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return out, err
				}
				if strings.HasPrefix(line, "event: run.started") {
					break
				}
			}
			out = append(out, res)
		}
		return out, nil
	}
	first, err := open(1)
	defer closeAll(first)
	if err != nil {
		return nil, err
	}
	before, err := rssOf(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	rest, err := open(followers)
	defer closeAll(rest)
	if err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond) // let the GC settle; RSS is not a sync point
	after, err := rssOf(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	per := (after - before) / int64(followers)
	return []Result{{"memory per idle SSE follower", fmt.Sprintf("%.1f KiB", float64(per)/1024),
		fmt.Sprintf("kern serve's RSS %s → %s with %d more idle streams of one run", mib(before), mib(after), followers)}}, nil
}

func closeAll(rs []*http.Response) {
	for _, r := range rs {
		r.Body.Close()
	}
}
