package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
)

// StartProcess starts cmd, a worker process that prints "ready" once it
// works (see RunWorkerProcess), and waits for that.
func StartProcess(name string, cmd *exec.Cmd) (*WorkerProcess, error) {
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("worker process %s did not start: %q %v", name, line, err)
	}
	return &WorkerProcess{PID: cmd.Process.Pid, Kill: func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }}, nil
}

// RunWorkerProcess is the body of a worker process: cfg (MaxConcurrentRuns,
// River's fetch settings; an error-level logger unless set), one agent
// "bench" whose model id is the process's name, dbURL opened with opts
// (db.WithDirectURL for the pooler group). It prints "ready" and works
// until killed.
func RunWorkerProcess(name, dbURL, modelURL string, cfg agent.WorkerConfig, opts ...db.Option) error {
	ctx := context.Background()
	d, err := db.Open(ctx, dbURL, opts...)
	if err != nil {
		return err
	}
	defer d.Close()
	a := &agent.Agent{Name: "bench", Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("bench", modelURL), ID: name}, DB: d}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	w, err := agent.NewWorker(d, cfg, a)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}
