// Dashboard: kern's web view of runs (/ui/ of package server), with River
// UI beside it (/riverui/). This program serves the API and the dashboard
// on 127.0.0.1 with a worker for the agent "assistant", makes an API key
// for a demo tenant (which may also open River UI), submits a few runs
// — one that completes, one that streams slowly, one that waits for an
// approval — and prints where to look and which key to sign in with.
//
// By default it checks that the pages answer and exits (make demo). With
// -serve it keeps serving until Ctrl-C, for a person with a browser:
//
//	go run ./cookbook/dashboard -serve
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/server"
)

func main() {
	serve := flag.Bool("serve", false, "keep serving until Ctrl-C")
	addr := flag.String("addr", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	if err := runAll(context.Background(), *addr, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context, addr string, serve bool) error {
	env, err := demo.Setup(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer env.Close()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	transfer := agent.Tool{
		Name: "transfer", Description: "Moves money between accounts.", NeedsApproval: true,
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"amount": map[string]any{"type": "number"}}},
		Call:       func(context.Context, json.RawMessage) (string, error) { return "moved", nil },
	}
	assistant := &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: env.Model, DB: env.DB, Tools: []agent.Tool{transfer}}
	worker, err := agent.NewWorker(env.DB, agent.WorkerConfig{Logger: quiet}, assistant)
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

	// A tenant and a key name of its own for each run of the demo, which
	// may share a DATABASE_URL with earlier ones (key names are unique, and
	// the page should list this run's runs only).
	tenant := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	api, err := server.New(env.DB, server.Config{Logger: quiet, RiverUITenants: []string{tenant}})
	if err != nil {
		return err
	}
	defer api.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := api.HTTPServer(ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(stopCtx)
		_ = hs.Close() // the dashboard's event streams do not end with Shutdown
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "serve:", err)
		}
	}()
	url := "http://" + ln.Addr().String()

	key, err := env.DB.CreateAPIKey(ctx, tenant, tenant+"-key")
	if err != nil {
		return err
	}
	// Runs of the demo's tenant, the key's: the dashboard shows them.
	prompts := []string{"Say hello to the dashboard.",
		"[fake:drip=300ms,words=200] Tell a long story, slowly.",
		`fake-plan: {"turns": [[{"name": "transfer", "arguments": {"amount": 120}}]], "answer": "Moved 120."}`}
	var ids []string
	for _, p := range prompts {
		out, err := assistant.Run(ctx, p, agent.Background(true), agent.WithTenant(tenant), agent.WithName("demo"))
		if err != nil {
			return err
		}
		ids = append(ids, out.RunID)
	}
	// The demo's runs end with it: left pending or waiting in a shared
	// DATABASE_URL, they would hold the slots of the next demo's workers
	// of the same agent.
	defer func() {
		view, err := env.DB.ForTenant(tenant)
		if err != nil {
			return
		}
		for _, id := range ids {
			_, _ = view.CancelRun(context.WithoutCancel(ctx), id)
		}
	}()

	fmt.Printf("Dashboard: %s/ui/  (River UI: %s/riverui/)\n", url, url)
	fmt.Printf("Sign in with the API key of tenant %q: %s\n", tenant, key)

	// The pages answer: the sign-in form, and the runs after signing in.
	if err := check(url, key); err != nil {
		return fmt.Errorf("%w: %v", demo.ErrScenario, err)
	}
	fmt.Println("the sign-in page and the run list answer")
	if !serve {
		fmt.Println("(go run ./cookbook/dashboard -serve keeps it up for a browser)")
		return nil
	}
	fmt.Println("serving until Ctrl-C")
	sig, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	<-sig.Done()
	return nil
}

// check signs in as a browser would and reads the run list.
func check(url, key string) error {
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	res, err := client.Get(url + "/ui/login")
	if err != nil {
		return err
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	const mark = `name="csrf" value="`
	i := strings.Index(string(page), mark)
	if res.StatusCode != 200 || i < 0 {
		return fmt.Errorf("sign-in page: status %d", res.StatusCode)
	}
	token := string(page[i+len(mark) : i+len(mark)+32])
	req, _ := http.NewRequest("POST", url+"/ui/login", strings.NewReader("csrf="+token+"&key="+key))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range res.Cookies() {
		req.AddCookie(c)
	}
	res, err = client.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) == 0 {
		return fmt.Errorf("sign-in: status %d", res.StatusCode)
	}
	req, _ = http.NewRequest("GET", url+"/ui/runs", nil)
	for _, c := range res.Cookies() {
		if c.MaxAge >= 0 && c.Value != "" {
			req.AddCookie(c)
		}
	}
	res, err = client.Do(req)
	if err != nil {
		return err
	}
	page, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || strings.Count(string(page), `class="run"`) != len([]int{0, 1, 2}) {
		return fmt.Errorf("run list: status %d, %d runs", res.StatusCode, strings.Count(string(page), `class="run"`))
	}
	return nil
}
