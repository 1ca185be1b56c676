package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
)

// The "tools" group: what the durable loop costs. A 3-step tool run (two
// turns that each call a tool, then the answer) against a plain run, in
// alternating rounds of one sitting (medians), and what one persisted step
// costs: round trips per step and the step write's latency.

// toolStepsPerRun is the steps a 3-step run persists: two turns and two
// tool results (the answer is the final write, as in a plain run).
const toolStepsPerRun = 4

var benchTool = agent.Tool{Name: "step", Description: "does one step",
	Parameters: map[string]any{"type": "object"},
	Call:       func(context.Context, json.RawMessage) (string, error) { return "step done", nil }}

// threeStepScript asks for a tool twice, then answers.
func threeStepScript(req fakellm.Request) fakellm.Reply {
	results := 0
	for _, m := range req.Messages {
		if m.Role == "tool" {
			results++
		}
	}
	if results < 2 {
		return fakellm.Reply{Content: "Next step.", ToolCalls: []fakellm.ToolCall{{Name: "step", Arguments: `{"n":1}`}}}
	}
	return fakellm.Reply{Content: "The capital of France is Paris."}
}

func plainScript(fakellm.Request) fakellm.Reply {
	return fakellm.Reply{Content: "The capital of France is Paris."}
}

func tools(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	warm := cfg
	warm.Runs = max(cfg.Runs/10, 50)
	for _, withTools := range []bool{false, true} {
		if _, err := loopThroughput(ctx, env, warm, withTools); err != nil {
			return nil, err
		}
	}
	var plainRates, toolRates []float64
	for round := range max(cfg.Rounds, 1) {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, withTools := range order {
			rate, err := loopThroughput(ctx, env, cfg, withTools)
			if err != nil {
				return nil, err
			}
			if withTools {
				toolRates = append(toolRates, rate)
			} else {
				plainRates = append(plainRates, rate)
			}
		}
	}
	note := fmt.Sprintf("%d runs, %d submitters, %d concurrent runs", cfg.Runs, cfg.Submitters, cfg.Concurrency)
	if len(toolRates) > 1 {
		note = fmt.Sprintf("medians of %d alternating rounds %s vs %s; %s", len(toolRates), roundsList(toolRates), roundsList(plainRates), note)
	}
	tool, plain := median(toolRates), median(plainRates)
	out := []Result{
		{"runs/s, 3-step tool run (2 tool turns + answer)", fmt.Sprintf("%.0f", tool), note},
		{"runs/s, plain run, same sitting", fmt.Sprintf("%.0f", plain), fmt.Sprintf("tool run: %.2f of it, for 3 model turns and 4 persisted steps", tool/plain)},
	}
	steps, err := stepCost(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	return append(out, steps...), nil
}

// loopThroughput is throughput for a plain run or a 3-step tool run.
func loopThroughput(ctx context.Context, env Env, cfg Config, withTools bool) (float64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
	env.Fake.Script(plainScript)
	if withTools {
		a.Tools = []agent.Tool{benchTool}
		env.Fake.Script(threeStepScript)
	}
	stop, err := newWorker(ctx, d, env, cfg, a)
	if err != nil {
		return 0, err
	}
	defer stop()
	return drive(ctx, cfg, func() error {
		_, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
		return err
	}, func() (int, error) {
		var finished, completed int
		err := d.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('completed','error','cancelled')),
			count(*) FILTER (WHERE status = 'completed') FROM kern_run`).Scan(&finished, &completed)
		if err == nil && finished == cfg.Runs && completed != cfg.Runs {
			err = fmt.Errorf("tools: %d of %d runs completed", completed, cfg.Runs)
		}
		return finished, err
	})
}

// stepTracer counts a pool's statements and times its step writes.
type stepTracer struct {
	mu         sync.Mutex
	statements int
	steps      []time.Duration
}

type stepStartKey struct{}

func (s *stepTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.statements++
	s.mu.Unlock()
	if strings.Contains(data.SQL, "req_calls") || strings.Contains(data.SQL, "req_call_id") {
		return context.WithValue(ctx, stepStartKey{}, time.Now())
	}
	return ctx
}

func (s *stepTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if start, ok := ctx.Value(stepStartKey{}).(time.Time); ok {
		s.mu.Lock()
		s.steps = append(s.steps, time.Since(start))
		s.mu.Unlock()
	}
}

func (s *stepTracer) take() (int, []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, steps := s.statements, s.steps
	s.statements, s.steps = 0, nil
	return n, steps
}

// stepCost runs foreground runs one at a time on a traced pool, plain and
// 3-step, and reports the extra round trips per persisted step and the step
// writes' latency. Foreground runs keep River's own statements out of the
// count; a lone run's writes are not batched, so each costs its own round
// trip.
func stepCost(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if env.DatabaseURL == nil {
		return nil, nil
	}
	d0, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	pcfg, err := pgxpool.ParseConfig(env.DatabaseURL(d0))
	if err != nil {
		return nil, err
	}
	tracer := &stepTracer{}
	pcfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	d, err := db.New(pool)
	if err != nil {
		return nil, err
	}
	defer d.Close()

	n := max(min(cfg.Samples, 300), 10)
	measure := func(withTools bool) (int, []time.Duration, error) {
		a := &agent.Agent{Name: "bench", Model: env.Model, DB: d}
		env.Fake.Script(plainScript)
		if withTools {
			a.Tools = []agent.Tool{benchTool}
			env.Fake.Script(threeStepScript)
		}
		if _, err := a.Run(ctx, "warm up"); err != nil { // connections, prepared statements
			return 0, nil, err
		}
		tracer.take()
		for range n {
			out, err := a.Run(ctx, "What is the capital of France?")
			if err != nil {
				return 0, nil, err
			}
			if out.Status != "completed" {
				return 0, nil, fmt.Errorf("tools: a measured run ended %s: %s", out.Status, out.Error)
			}
		}
		stmts, steps := tracer.take()
		return stmts, steps, nil
	}
	plainStmts, _, err := measure(false)
	if err != nil {
		return nil, err
	}
	toolStmts, steps, err := measure(true)
	if err != nil {
		return nil, err
	}
	perStep := float64(toolStmts-plainStmts) / float64(n*toolStepsPerRun)
	return []Result{
		{"round trips per persisted step", fmt.Sprintf("%.2f", perStep),
			fmt.Sprintf("(%d − %d statements) / %d steps, %d sequential foreground runs each", toolStmts, plainStmts, n*toolStepsPerRun, n)},
		{"step write p50", ms(pct(steps, 50)), fmt.Sprintf("%d turn and tool-result writes, alone (not batched)", len(steps))},
		{"step write p99", ms(pct(steps, 99)), ""},
	}, nil
}
