package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// Worker processes: the test binary re-executed with these variables set
// runs one worker until SIGTERM (graceful stop) or SIGKILL.
const (
	workerProcessEnv = "KERN_TEST_WORKER_PROCESS"
	workerDBEnv      = "KERN_TEST_WORKER_DB"
	workerModelEnv   = "KERN_TEST_WORKER_MODEL_URL"
	workerRescueEnv  = "KERN_TEST_WORKER_RESCUE_AFTER"
	// workerToolsEnv set gives the agent the tools "record" and
	// "guarded" (NeedsApproval), which count their calls in the table
	// test_tool_calls (createToolCallsTable): a count that survives the
	// process, with the process that made each call.
	workerToolsEnv = "KERN_TEST_WORKER_TOOLS"
	// workerMaxPerKeyEnv sets the worker's WorkerConfig.MaxRunsPerKey.
	workerMaxPerKeyEnv = "KERN_TEST_WORKER_MAX_RUNS_PER_KEY"
	// workerModelIDEnv sets the model id the worker asks for (default: the
	// process's name), e.g. a rate-limited model's.
	workerModelIDEnv = "KERN_TEST_WORKER_MODEL_ID"
	// workerHooksEnv set gives the worker an OnComplete that records each
	// call in the table test_completions (createCompletionsTable), with the
	// process that made it, and a WebhookSecret (testWebhookSecret). Set to
	// "hold", the OnComplete then blocks until the process ends.
	workerHooksEnv = "KERN_TEST_WORKER_HOOKS"
	// workerDirectEnv gives the worker db.WithDirectURL, for a worker
	// behind a transaction pooler (deploy_pooler_crash_test.go).
	workerDirectEnv = "KERN_TEST_DIRECT_URL"
)

// processAgent is the agent every worker process serves.
const processAgent = "assistant"

func runWorkerProcess() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A small pool: tests start several worker processes against a server
	// that other test packages share.
	var opts []db.Option
	if direct := os.Getenv(workerDirectEnv); direct != "" {
		opts = append(opts, db.WithDirectURL(direct))
	}
	d, err := db.Open(ctx, kerntest.WithPoolSize(os.Getenv(workerDBEnv), 6), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer d.Close()
	rescueAfter, err := time.ParseDuration(os.Getenv(workerRescueEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The model id names the process, so tests can tell which worker made
	// a request, unless the test names one.
	modelID := os.Getenv(workerProcessEnv)
	if id := os.Getenv(workerModelIDEnv); id != "" {
		modelID = id
	}
	a := &agent.Agent{
		Name:  processAgent,
		Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("k", os.Getenv(workerModelEnv)), ID: modelID},
		DB:    d,
	}
	if os.Getenv(workerToolsEnv) != "" {
		record := func(output func(callID string) string) func(context.Context, json.RawMessage) (string, error) {
			return func(ctx context.Context, _ json.RawMessage) (string, error) {
				id := agent.ToolCallID(ctx)
				_, err := d.Pool().Exec(ctx, `INSERT INTO test_tool_calls (call_id, worker) VALUES ($1, $2)`, id, os.Getenv(workerProcessEnv))
				return output(id), err
			}
		}
		a.Tools = []agent.Tool{
			{Name: "record", Call: record(func(string) string { return "recorded" })},
			{Name: "guarded", NeedsApproval: true, Call: record(func(id string) string { return "done " + id })},
		}
	}
	maxPerKey, _ := strconv.Atoi(os.Getenv(workerMaxPerKeyEnv))
	var onComplete func(context.Context, *run.Output)
	var webhookSecret string
	if hooks := os.Getenv(workerHooksEnv); hooks != "" {
		webhookSecret = testWebhookSecret
		onComplete = func(ctx context.Context, out *run.Output) {
			if _, err := d.Pool().Exec(ctx, `INSERT INTO test_completions (run_id, worker) VALUES ($1, $2)`,
				out.RunID, os.Getenv(workerProcessEnv)); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			if hooks == "hold" {
				<-ctx.Done()
			}
		}
	}
	cfg := agent.WorkerConfig{
		OnComplete:        onComplete,
		WebhookSecret:     webhookSecret,
		MaxRunsPerKey:     maxPerKey,
		MaxConcurrentRuns: 20,
		MaxAttempts:       5,
		RescueAfter:       rescueAfter,
		HeartbeatInterval: rescueAfter / 5,
		RetryBaseDelay:    10 * time.Millisecond,
		Logger:            logger,
	}
	if webhookSecret != "" {
		// A POST a test holds is held until the process ends, not cut
		// short by the attempt's timeout (and retried by this process).
		agent.SetWebhookTestKnobs(&cfg, 5, 10*time.Millisecond, 5*time.Minute, 0)
	}
	w, err := agent.NewWorker(d, cfg, a)
	if err == nil {
		err = w.Start(context.WithoutCancel(ctx))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// createToolCallsTable makes the table the tools of worker processes
// (workerToolsEnv) count their calls in: the call's agent.ToolCallID, the
// worker process that made it, and when (Postgres's clock, as the run's
// events and steps have it).
func createToolCallsTable(t *testing.T, a *agent.Agent) {
	t.Helper()
	_, err := a.DB.Pool().Exec(kerntest.Context(t, 10*time.Second), `CREATE TABLE test_tool_calls (
		id      bigserial   PRIMARY KEY,
		call_id text        NOT NULL,
		worker  text        NOT NULL,
		at      timestamptz NOT NULL DEFAULT clock_timestamp())`)
	if err != nil {
		t.Fatal(err)
	}
}

// createCompletionsTable makes the table the OnComplete of worker
// processes (workerHooksEnv) records its calls in.
func createCompletionsTable(t *testing.T, d *db.DB) {
	t.Helper()
	_, err := d.Pool().Exec(kerntest.Context(t, 10*time.Second), `CREATE TABLE test_completions (
		id     bigserial PRIMARY KEY,
		run_id text      NOT NULL,
		worker text      NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
}

// workerProcess is a running worker process.
type workerProcess struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startWorkerProcess starts a worker process and waits until it works.
func startWorkerProcess(t *testing.T, name, dbURL, modelURL string, rescueAfter time.Duration, env ...string) *workerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		workerProcessEnv+"="+name, workerDBEnv+"="+dbURL, workerModelEnv+"="+modelURL,
		workerRescueEnv+"="+rescueAfter.String())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- true
			}
		}
		ready <- false
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("worker process %s exited before it was ready", name)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("worker process %s not ready after 30s", name)
	}
	return p
}

// kill ends the process at once, as a crash or the OOM killer would.
func (p *workerProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// terminate asks for a graceful stop and waits for it.
func (p *workerProcess) terminate() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}
