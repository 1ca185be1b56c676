package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/run"
)

// The "toolrecovery" group: a tool run whose worker process is SIGKILLed
// between two tool calls. Per kill, a fresh worker process (the victim)
// takes toolRecoveryRunsPerKill runs of a 2-step tool plan; each run's
// first turn asks for the tool, the tool records its call in a table keyed
// by agent.ToolCallID (a duplicate call adds to the row's count), and the
// second turn streams slowly on the victim. Once every run's first tool
// result is committed (kern_run_step) and its second turn is streaming (the
// model's request log), a second fresh process (the rescuer) is started and
// the victim is killed. The figure is from the kill to each run completing
// on the rescuer; the counts are what the transcript promises: no tool
// call made twice, no finished turn asked again, no run lost.

// ToolAgentName is the agent a tool worker process serves (see
// RunToolWorkerProcess): not "bench", so the other groups' runs and
// workers never meet this group's.
const ToolAgentName = "bench-tools"

// ToolCallsTable is where the tool worker process's tool counts its calls.
const ToolCallsTable = "kern_bench_tool_calls"

// ToolRecoveryRescueAfter is the tool worker processes' RescueAfter (their
// HeartbeatInterval is its default, a third of it): shorter than the
// default 30s so that 20 kills one after another take a minute or so.
const ToolRecoveryRescueAfter = 3 * time.Second

// toolRecoveryRunsPerKill runs are on the victim when it is killed.
const toolRecoveryRunsPerKill = 5

// toolRecoveryAnswer is the rescued runs' final answer.
const toolRecoveryAnswer = "Both steps recorded."

// toolVictimPrefix names the victim processes; the script streams their
// second turns slowly, so they are mid-stream when killed.
const toolVictimPrefix = "toolvictim"

// RunToolWorkerProcess is the body of a tool worker process: like
// RunWorkerProcess, but its one agent is ToolAgentName with the tool
// "record", which counts its calls in ToolCallsTable (made by the bench)
// keyed by agent.ToolCallID.
func RunToolWorkerProcess(name, dbURL, modelURL string, cfg agent.WorkerConfig) error {
	ctx := context.Background()
	d, err := db.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer d.Close()
	record := agent.Tool{Name: "record", Description: "records one step of the order",
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"step": map[string]any{"type": "integer"}}},
		Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
			_, err := d.Pool().Exec(ctx, `INSERT INTO `+ToolCallsTable+` (call_id, calls) VALUES ($1, 1)
				ON CONFLICT (call_id) DO UPDATE SET calls = `+ToolCallsTable+`.calls + 1`, agent.ToolCallID(ctx))
			return "recorded", err
		}}
	a := &agent.Agent{Name: ToolAgentName, DB: d, Tools: []agent.Tool{record},
		Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("bench", modelURL), ID: name}}
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

// toolRecoveryScript: the first turn asks for record(1); the second asks
// for record(2), after streaming for about 40s on a victim (it is killed
// long before) and at once elsewhere; then the answer.
func toolRecoveryScript(req fakellm.Request) fakellm.Reply {
	switch toolResults(req) {
	case 0:
		return fakellm.Reply{Content: "Step one. ", ToolCalls: []fakellm.ToolCall{{Name: "record", Arguments: `{"step":1}`}}}
	case 1:
		r := fakellm.Reply{Content: "Step two. ", ToolCalls: []fakellm.ToolCall{{Name: "record", Arguments: `{"step":2}`}}}
		if strings.HasPrefix(req.Model, toolVictimPrefix) {
			r.Content, r.Drip = fakellm.LoremWords(2000), 20*time.Millisecond
		}
		return r
	}
	return fakellm.Reply{Content: toolRecoveryAnswer}
}

func toolResults(req fakellm.Request) int {
	n := 0
	for _, m := range req.Messages {
		if m.Role == "tool" {
			n++
		}
	}
	return n
}

// toolRecoveryTally is what the kills found.
type toolRecoveryTally struct {
	samples                []time.Duration
	lost                   int
	duplicated, firstAgain int
	missing                int // completed runs that made other than 2 distinct tool calls
	secondAgain            int // runs whose second turn (cut by the kill) the rescuer asked again
	problems               []string
}

func (t *toolRecoveryTally) problem(format string, args ...any) {
	if len(t.problems) < 5 {
		t.problems = append(t.problems, fmt.Sprintf(format, args...))
	}
}

func toolRecovery(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	if cfg.ToolKills == 0 || env.SpawnToolWorker == nil {
		return nil, nil
	}
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if _, err := d.Pool().Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ToolCallsTable+` (call_id text PRIMARY KEY, calls integer NOT NULL)`); err != nil {
		return nil, err
	}
	env.Fake.Script(toolRecoveryScript)
	url := env.DatabaseURL(d)
	submitter := &agent.Agent{Name: ToolAgentName, Model: env.Model, DB: d}
	var tally toolRecoveryTally
	for k := range cfg.ToolKills {
		if err := toolKill(ctx, env, d, url, submitter, k, &tally); err != nil {
			return nil, fmt.Errorf("toolrecovery: kill %d: %w", k+1, err)
		}
	}
	runs := cfg.ToolKills * toolRecoveryRunsPerKill
	lostNote := "not completed with the scripted answer, or not exactly one terminal event"
	if tally.missing > 0 {
		lostNote += fmt.Sprintf("; %d completed runs made other than 2 distinct tool calls", tally.missing)
	}
	if len(tally.problems) > 0 {
		lostNote += "; first: " + strings.Join(tally.problems, "; ")
	}
	took := "n/a"
	if len(tally.samples) > 0 {
		took = fmt.Sprintf("%.1f s / %.1f s", pct(tally.samples, 50).Seconds(), pct(tally.samples, 100).Seconds())
	}
	return []Result{
		{"tool run recovery after SIGKILL p50 / max", took,
			fmt.Sprintf("%d 2-step tool runs on %d killed worker processes (%d each), killed after the first tool result committed, mid second turn; RescueAfter %v, heartbeat %v",
				len(tally.samples), cfg.ToolKills, toolRecoveryRunsPerKill, ToolRecoveryRescueAfter, ToolRecoveryRescueAfter/3)},
		{"tool calls duplicated", fmt.Sprintf("%d of %d", tally.duplicated, 2*runs), "ToolCallID rows with calls > 1, counted in Postgres by the tool"},
		{"first turns asked again", fmt.Sprintf("%d of %d", tally.firstAgain, runs),
			fmt.Sprintf("runs whose first turn the model was asked more than once; the second turn, cut on the victim, was asked again by the rescuer in %d of %d", tally.secondAgain, runs)},
		{"runs lost", fmt.Sprintf("%d of %d", tally.lost, runs), lostNote},
	}, nil
}

// toolKill is one kill: a victim takes toolRecoveryRunsPerKill runs, is
// killed mid second turn, a rescuer finishes them.
func toolKill(ctx context.Context, env Env, d *db.DB, url string, submitter *agent.Agent, k int, tally *toolRecoveryTally) error {
	victimName := fmt.Sprintf("%s-%d", toolVictimPrefix, k)
	victim, err := env.SpawnToolWorker(victimName, url, ToolRecoveryRescueAfter)
	if err != nil {
		return err
	}
	killVictim := victim.Kill
	defer func() { killVictim() }()
	before := env.Fake.Count()
	ids := make([]string, toolRecoveryRunsPerKill)
	prompts := make(map[string]string, len(ids)) // prompt → run id
	for i := range ids {
		prompt := fmt.Sprintf("Record order %d of kill %d.", i, k)
		out, err := submitter.Run(ctx, prompt, agent.Background(true))
		if err != nil {
			return err
		}
		ids[i], prompts[prompt] = out.RunID, out.RunID
	}

	// Wait until each run's first tool result is committed and the victim
	// streams its second turn.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var committed int
		if err := d.Pool().QueryRow(ctx, `SELECT count(DISTINCT run_id) FROM kern_run_step
			WHERE run_id = ANY($1) AND role = 'tool'`, ids).Scan(&committed); err != nil {
			return err
		}
		streaming := map[string]bool{}
		for seq := before + 1; seq <= env.Fake.Count(); seq++ {
			req, ok := env.Fake.Request(seq)
			if ok && req.Model == victimName && toolResults(req) == 1 && !req.Completed {
				streaming[prompts[req.LastUserMessage()]] = true
			}
		}
		delete(streaming, "")
		if committed == len(ids) && len(streaming) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 30s, %d of %d runs have a committed tool result and %d stream their second turn on %s",
				committed, len(ids), len(streaming), victimName)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	var calledBefore int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM `+ToolCallsTable+` c, unnest($1::text[]) r(id)
		WHERE starts_with(c.call_id, r.id || '/')`, ids).Scan(&calledBefore); err != nil {
		return err
	}
	if calledBefore != len(ids) {
		tally.problem("kill %d: %d tool calls recorded before the kill, want %d", k+1, calledBefore, len(ids))
	}

	rescuer, err := env.SpawnToolWorker(fmt.Sprintf("toolrescuer-%d", k), url, ToolRecoveryRescueAfter)
	if err != nil {
		return err
	}
	defer rescuer.Kill()
	killVictim()
	killVictim = func() {}
	killed := time.Now()

	// A run not finished a minute after the kill (twenty times RescueAfter)
	// is lost, and so reported; the kills go on.
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	completed := map[string]bool{}
	for _, id := range ids {
		out, err := submitter.WaitRun(waitCtx, id)
		if err != nil && waitCtx.Err() != nil && ctx.Err() == nil {
			tally.lost++
			if out, err := submitter.GetRunOutput(ctx, id); err == nil {
				tally.problem("kill %d: run %s still %s (attempt %d) a minute after the kill", k+1, id, out.Status, out.Attempt)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("run %s: %w", id, err)
		}
		n, err := terminalEvents(ctx, d, id)
		if err != nil {
			return err
		}
		if out.Status != run.StatusCompleted || out.Content != toolRecoveryAnswer || n != 1 || out.FinishedAt == nil {
			tally.lost++
			tally.problem("kill %d: run %s ended %s %q (%s), %d terminal events", k+1, id, out.Status, firstWords(out.Content, 8), out.Error, n)
			continue
		}
		if out.Attempt != 2 {
			tally.problem("kill %d: run %s completed on attempt %d, want 2", k+1, id, out.Attempt)
		}
		completed[id] = true
		tally.samples = append(tally.samples, out.FinishedAt.Sub(killed))
	}

	// Tool calls, counted by the tool: each run should have made two, once
	// each.
	rows, err := d.Pool().Query(ctx, `SELECT r.id, count(c.call_id), count(*) FILTER (WHERE c.calls > 1)
		FROM unnest($1::text[]) r(id) LEFT JOIN `+ToolCallsTable+` c ON starts_with(c.call_id, r.id || '/')
		GROUP BY r.id`, ids)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var calls, dup int
		if err := rows.Scan(&id, &calls, &dup); err != nil {
			rows.Close()
			return err
		}
		tally.duplicated += dup
		if dup > 0 {
			tally.problem("kill %d: run %s made a tool call more than once", k+1, id)
		}
		if calls != 2 && completed[id] {
			tally.missing++
			tally.problem("kill %d: run %s has %d distinct tool calls, want 2", k+1, id, calls)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	// First turns, counted at the model: a request carrying no tool result.
	// The second turn, in flight at the kill, is asked again by the rescuer:
	// that it was cut on the victim and asked again shows the kill fell
	// where it should.
	first, cut, second := map[string]int{}, map[string]bool{}, map[string]bool{}
	for seq := before + 1; seq <= env.Fake.Count(); seq++ {
		req, ok := env.Fake.Request(seq)
		if !ok {
			return fmt.Errorf("model request %d: %w", seq, fakellm.ErrEvicted)
		}
		id := prompts[req.LastUserMessage()]
		switch {
		case id == "":
		case toolResults(req) == 0:
			first[id]++
		case toolResults(req) == 1 && req.Model == victimName && !req.Completed:
			cut[id] = true
		case toolResults(req) == 1 && req.Model != victimName:
			second[id] = true
		}
	}
	for _, id := range ids {
		if first[id] > 1 {
			tally.firstAgain++
			tally.problem("kill %d: run %s's first turn was asked %d times", k+1, id, first[id])
		}
		if cut[id] && second[id] {
			tally.secondAgain++
		}
	}
	return nil
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		return strings.Join(f[:n], " ") + " …"
	}
	return s
}
