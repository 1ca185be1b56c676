package bench

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// followLag: how far `kern runs wait --follow` runs behind the stream.
// The bench plays the worker (claim, then one content append at a time,
// as eventLag does) while the CLI, a subprocess, follows the run; each lag
// is from the append's start to the CLI having printed that delta. It
// needs Env.KernCLI.
func followLag(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if env.KernCLI == nil {
		return nil, nil
	}
	bin, err := env.KernCLI()
	if err != nil {
		return nil, err
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	const id = "follow"
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "bench", Input: "x"}); err != nil {
		return nil, err
	}
	store := d.Engine(engine.Key{})
	claim, err := store.StartRun(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "runs", "wait", "--follow", "--database-url", d.Pool().Config().ConnString(), id)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Each delta is "<n>\n": the CLI prints content as stored, so every
	// line read is one delta.
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	n := max(cfg.Samples, 10)
	lags := make([]time.Duration, 0, n)
	// The first delta waits for the CLI to start and connect: not counted.
	for i := range n + 1 {
		start := time.Now()
		if err := store.AppendContent(ctx, claim.Fence, claim.EventSeq+1+int64(i), fmt.Sprintf("%d\n", i)); err != nil {
			return nil, err
		}
		select {
		case line, ok := <-lines:
			if !ok || strings.TrimSpace(line) != fmt.Sprint(i) {
				return nil, fmt.Errorf("follow lag: the CLI printed %q (open %v), want %d", line, ok, i)
			}
			if i > 0 {
				lags = append(lags, time.Since(start))
			}
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("follow lag: delta %d never printed", i)
		}
	}
	if err := store.FinishRun(ctx, claim.Fence, engine.Finish{Status: run.StatusCompleted}); err != nil {
		return nil, err
	}
	return []Result{
		{"kern runs wait --follow lag p50", ms(pct(lags, 50)), fmt.Sprintf("%d deltas, from the appending UPDATE to the CLI (a subprocess) printing it", len(lags))},
		{"kern runs wait --follow lag p99", ms(pct(lags, 99)), ""},
	}, nil
}
