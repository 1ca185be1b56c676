// HTTP: kern's API from other languages. This program serves the API
// (package server) on 127.0.0.1 with a worker for the agent "assistant",
// makes an API key for the tenant "demo", and runs the two clients in this
// directory against it, with KERN_URL and KERN_KEY in their environment:
//
//   - client.py, Python's standard library only: submit a run, follow its
//     server-sent events, drop the connection and resume with Last-Event-ID
//     (no event lost or repeated), then cancel a run whose model hangs;
//   - curl.sh, POSIX sh and curl: submit, stream, get, list, and cancel an
//     id before its run exists.
//
// A client whose interpreter (python3; sh and curl) is not on PATH is
// skipped. The program fails if a client that ran failed. See README.md
// here to run the clients against `kern serve`.
//
// Offline by default (fake model, throwaway Postgres); see
// cookbook/background_execution for the environment variables.
//
//	go run ./cookbook/http
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/demo"
	"github.com/kern-go/kern/server"
)

// The clients, embedded so the program runs from any directory; each is
// fed to its interpreter on stdin.
var (
	//go:embed client.py
	clientPy []byte
	//go:embed curl.sh
	curlSh []byte
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
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	assistant := &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: env.Model, DB: env.DB}
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

	// The API, as `kern serve` runs it, on a free port.
	api, err := server.New(env.DB, server.Config{Logger: quiet})
	if err != nil {
		return err
	}
	defer api.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
		_ = hs.Close() // event streams still open do not end with Shutdown
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "serve:", err)
		}
	}()
	url := "http://" + ln.Addr().String()

	// A key acts for its tenant: the clients see the tenant "demo"'s runs only.
	// Key names are unique in the database: one of its own for each run of
	// the demo, which may share a DATABASE_URL with earlier ones.
	keyName := fmt.Sprintf("demo-key-%d", time.Now().UnixNano())
	key, err := env.DB.CreateAPIKey(ctx, "demo", keyName)
	if err != nil {
		return err
	}
	fmt.Printf("kern API on %s; key %q for tenant \"demo\"\n", url, keyName)
	clientEnv := append(os.Environ(), "KERN_URL="+url, "KERN_KEY="+key)

	var failed []string
	for _, c := range []struct {
		name  string
		needs []string // on PATH
		args  []string // the interpreter, reading the script from stdin
		code  []byte
	}{
		{"client.py", []string{"python3"}, []string{"python3", "-u", "-"}, clientPy},
		{"curl.sh", []string{"sh", "curl"}, []string{"sh", "-s"}, curlSh},
	} {
		fmt.Printf("\n=== %s\n", c.name)
		if missing := notOnPath(c.needs); missing != "" {
			fmt.Printf("%s is not on PATH: skipping %s\n", missing, c.name)
			continue
		}
		runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cmd := exec.CommandContext(runCtx, c.args[0], c.args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env = bytes.NewReader(c.code), os.Stdout, os.Stderr, clientEnv
		err := cmd.Run()
		cancel()
		if err != nil {
			fmt.Printf("=== %s failed: %v\n", c.name, err)
			failed = append(failed, c.name)
			continue
		}
		fmt.Printf("=== %s passed\n", c.name)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %v failed", demo.ErrScenario, failed)
	}
	return nil
}

// notOnPath returns the first of names that is not on PATH, "" if all are.
func notOnPath(names []string) string {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			return n
		}
	}
	return ""
}
