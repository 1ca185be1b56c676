package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// noModelEnv keeps the test's own environment from reaching the worker.
var noModelEnv = []string{"OPENAI_API_KEY=", "OPENAI_BASE_URL=", "DATABASE_URL="}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigBadFile(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "worker:\n  max_concurrent_runs: 2\nagents:\n  - name: a\n    model: m\n    modle: typo\n",
			`agents.yaml:6: unknown field "modle" in an agent`},
		{"unknown worker field", "worker:\n  concurrency: 2\nagents:\n  - {name: a, model: m}\n",
			`agents.yaml:2: unknown field "concurrency" in worker`},
		{"bad type", "worker:\n  max_concurrent_runs: lots\nagents:\n  - {name: a, model: m}\n",
			"agents.yaml:2: cannot unmarshal !!str `lots` into int"},
		{"bad duration", "worker:\n  default_timeout: 5\nagents:\n  - {name: a, model: m}\n",
			"agents.yaml:2: cannot unmarshal !!int `5` into a duration"},
		{"missing model", "agents:\n  - name: a\n    model: m\n  - name: b\n    instructions: Be brief.\n",
			"agents.yaml:4: agent 2 (b): missing model"},
		{"bad api", "agents:\n  - name: a\n    model: m\n    api: completions\n",
			`agents.yaml:4: agent 1 (a): api is "completions"`},
		{"duplicate name", "agents:\n  - {name: a, model: m}\n  - {name: a, model: m}\n",
			`agents.yaml:3: agent 2 (a): name "a" is also agent 1's`},
		{"no agents", "worker:\n  max_attempts: 2\n", "agents.yaml:1: no agents"},
		{"syntax", "agents:\n  - name: [\n", "agents.yaml:2: did not find expected node content"},
		{"missing key", "agents:\n  - {name: a, model: m, api_key_env: KERN_TEST_NO_SUCH_KEY}\n",
			"agent 1 (a): KERN_TEST_NO_SUCH_KEY is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "agents.yaml", tc.yaml)
			// No database is given: the file must be refused before one is
			// needed.
			res := runKern(t, ctx, "", noModelEnv, "worker", "--config", path)
			if res.code != 1 || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 and %q", res.code, res.stderr, tc.want)
			}
			if strings.Contains(res.stderr, "no database") {
				t.Fatalf("the file was checked after the database: %q", res.stderr)
			}
		})
	}
	res := runKern(t, ctx, "", noModelEnv, "worker", "--config", "x.yaml", "--agent", "a")
	if res.code != 1 || !strings.Contains(res.stderr, "--config and --agent do not mix") {
		t.Fatalf("--config with --agent: exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestConfigWorkerRunsAndDrains(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	fake, baseURL := kerntest.ModelServer(t)
	path := writeFile(t, "agents.yaml", `# two agents, one worker
worker:
  max_concurrent_runs: 4
  default_timeout: 1m
  max_attempts: 2
  retention: 1h
  shutdown_timeout: 20s
agents:
  - name: writer
    instructions: You write.
    model: fake-chat
    base_url: `+baseURL+`
    max_steps: 3
  - name: editor
    instructions: You edit.
    model: fake-responses
    api: responses
    base_url: `+baseURL+`
    history_runs: 2
`)
	cmd := exec.Command(kernBinary(t), "worker", "--config", path, "--database-url", url)
	cmd.Env = append(os.Environ(), noModelEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The submitting side needs no model.
	submit := func(name, prompt string) *run.Output {
		t.Helper()
		a := &agent.Agent{Name: name, Model: agent.OpenAIChat{}, DB: d}
		out, err := a.Run(ctx, prompt, agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, name := range []string{"writer", "editor"} {
		out, err := d.WaitRun(ctx, submit(name, "What is the capital of France?").RunID)
		if err != nil || out.Status != run.StatusCompleted || out.Content != "The capital of France is Paris." {
			t.Fatalf("%s's run: %+v, %v; worker said:\n%s", name, out, err, stderr.String())
		}
	}
	seen := map[string]string{}
	for _, r := range fake.Requests() {
		seen[r.Model] = r.API
		if r.Messages[0].Role != "system" || (r.Model == "fake-chat") != (r.Messages[0].Content == "You write.") {
			t.Errorf("request to %s began with %+v", r.Model, r.Messages[0])
		}
	}
	if seen["fake-chat"] != "chat" || seen["fake-responses"] != "responses" {
		t.Fatalf("models and APIs used: %v", seen)
	}

	// SIGTERM while a run is in flight: the worker lets it finish, then exits 0.
	slow := submit("writer", "[fake:latency=1500ms] capital of France, slowly")
	for {
		out, err := d.GetRun(ctx, slow.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if out.Status == run.StatusRunning {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("worker did not stop; stderr:\n%s", stderr.String())
	}
	out, err := d.GetRun(ctx, slow.RunID)
	if err != nil || out.Status != run.StatusCompleted {
		t.Fatalf("the in-flight run after the drain: %+v, %v", out, err)
	}
	if !strings.Contains(stderr.String(), "kern worker stopped") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}

func TestApprovalCommands(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	fake, model := kerntest.Model(t)
	called := make(chan string, 3)
	approval := func(name string) agent.Tool {
		return agent.Tool{Name: name, NeedsApproval: true, Call: func(context.Context, json.RawMessage) (string, error) {
			called <- name
			return name + " done", nil
		}}
	}
	a := &agent.Agent{Name: "ops", Model: model, DB: d, Tools: []agent.Tool{
		approval("delete"), approval("deploy"), {Name: "ask_human", External: true},
	}}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		if req.Messages[len(req.Messages)-1].Role == "tool" {
			return fakellm.Reply{Content: "finished"}
		}
		return fakellm.Reply{ToolCalls: []fakellm.ToolCall{
			{ID: "c1", Name: "delete", Arguments: `{}`},
			{ID: "c2", Name: "deploy", Arguments: `{}`},
			{ID: "c3", Name: "ask_human", Arguments: `{"q":"ok?"}`},
		}}
	})
	out, err := a.Run(ctx, "clean up", agent.Background(true), agent.WithTenant("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if w, err := a.WaitRun(ctx, out.RunID); err != nil || w.Status != run.StatusWaiting || len(w.Waiting) != 3 {
		t.Fatalf("run: %+v, %v; want waiting on 3 calls", w, err)
	}
	db := []string{"--database-url", url}
	for _, tc := range []struct {
		stdin     string
		args      []string
		code      int
		out, errs string
	}{
		{"", []string{"runs", "approve", "--tenant", "other", out.RunID, "c1"}, 1, "", "not found"},
		{"", []string{"runs", "approve", out.RunID[:13], "c1"}, 0, "approved\n", ""}, // a prefix of the id
		{"", []string{"runs", "approve", out.RunID, "c1"}, 1, "", "not waiting on that call"},
		{"", []string{"runs", "reject", out.RunID, "nope", "--reason", "x"}, 1, "", "not waiting on that call"},
		{"", []string{"runs", "approve", "0196a0b1-0000-7000-8000-000000000000", "c1"}, 1, "", "not found"},
		{"", []string{"runs", "reject", "--tenant", "acme", out.RunID, "c2", "--reason", "not today"}, 0, "rejected\n", ""},
		{"yes, go ahead\n", []string{"runs", "answer", out.RunID, "c3"}, 0, "answered\n", ""},
		{"", []string{"runs", "answer", out.RunID, "c3", "again"}, 1, "", "not waiting on that call"},
	} {
		res := runKern(t, ctx, tc.stdin, nil, append(db, tc.args...)...)
		if res.code != tc.code || res.stdout != tc.out || !strings.Contains(res.stderr, tc.errs) {
			t.Fatalf("kern %s: exit %d, stdout %q, stderr %q; want %d, %q, %q",
				strings.Join(tc.args, " "), res.code, res.stdout, res.stderr, tc.code, tc.out, tc.errs)
		}
	}
	final, err := a.WaitRun(ctx, out.RunID)
	if err != nil || final.Status != run.StatusCompleted {
		t.Fatalf("after the answers: %+v, %v", final, err)
	}
	if got := <-called; got != "delete" || len(called) != 0 {
		t.Fatalf("tools called: %s and %d more; want only delete", got, len(called))
	}
	reqs := fake.Requests()
	results := map[string]string{}
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == "tool" {
			results[m.ToolCallID] = m.Content
		}
	}
	if results["c1"] != "delete done" || results["c2"] != "rejected: not today" || results["c3"] != "yes, go ahead" {
		t.Fatalf("the model read %q", results)
	}
}

func TestSchedulesCommands(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	url := kerntest.DatabaseURL(t)
	db := []string{"--database-url", url}
	kernOK := func(args ...string) string {
		t.Helper()
		res := runKern(t, ctx, "", nil, append(db, args...)...)
		if res.code != 0 {
			t.Fatalf("kern %s: exit %d, stderr %q", strings.Join(args, " "), res.code, res.stderr)
		}
		return res.stdout
	}
	var put scheduleJSON
	js := kernOK("schedules", "put", "morning", "--agent", "assistant", "--cron", "0 7 * * *",
		"--timezone", "Europe/Paris", "--session", "reports", "--metadata", "team=ops", "--metadata", "k=a=b", "--paused",
		"--json", "Summarise yesterday.")
	if err := json.Unmarshal([]byte(js), &put); err != nil {
		t.Fatalf("put printed %q: %v", js, err)
	}
	if !strings.Contains(js, `"agent": "assistant"`) || !strings.Contains(js, `"next_run_at": "`) || strings.Contains(js, "AgentName") {
		t.Fatalf("put --json is not the API's schedule object: %s", js)
	}
	if put.Name != "morning" || put.Agent != "assistant" || put.Cron != "0 7 * * *" || put.Timezone != "Europe/Paris" ||
		put.SessionID != "reports" || !put.Paused || put.Prompt != "Summarise yesterday." ||
		put.Metadata["team"] != "ops" || put.Metadata["k"] != "a=b" || put.NextRunAt.IsZero() {
		t.Fatalf("put: %+v", put)
	}
	if hour := put.NextRunAt.In(mustZone(t, "Europe/Paris")).Hour(); hour != 7 {
		t.Fatalf("next run at %v: want 07:00 in Paris", put.NextRunAt)
	}
	// Without --json: for people.
	if text := kernOK("schedules", "put", "poll", "--agent", "watcher", "--cron", "@every 5m", "Anything new?"); !strings.HasPrefix(text, "name:      poll\nagent:     watcher\ncron:      @every 5m (UTC)\nnext run:  ") ||
		!strings.HasSuffix(text, "\nprompt:    Anything new?\n") {
		t.Fatalf("put printed\n%s", text)
	}

	table := kernOK("schedules", "list")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.HasPrefix(lines[1], "morning ") || !strings.Contains(lines[1], "Europe/Paris") || !strings.Contains(lines[1], "true") ||
		!strings.HasPrefix(lines[2], "poll ") || !strings.Contains(lines[2], "@every 5m") || !strings.Contains(lines[2], "UTC") {
		t.Fatalf("list printed\n%s", table)
	}
	var list []scheduleJSON
	listJS := kernOK("schedules", "list", "--json")
	if err := json.Unmarshal([]byte(listJS), &list); err != nil || len(list) != 2 || list[0].Name != "morning" || list[1].Agent != "watcher" ||
		!strings.Contains(listJS, `"session_id": "reports"`) {
		t.Fatalf("list --json: %+v, %v\n%s", list, err, listJS)
	}

	res := runKern(t, ctx, "", nil, append(db, "schedules", "put", "bad", "--cron", "0 25 * * *", "x")...)
	if res.code != 1 || !strings.Contains(res.stderr, "25") || res.stdout != "" {
		t.Fatalf("bad cron: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = runKern(t, ctx, "", nil, append(db, "schedules", "put", "bad", "--cron", "@daily", "--timezone", "Mars/Olympus", "x")...)
	if res.code != 1 || !strings.Contains(res.stderr, "Mars/Olympus") {
		t.Fatalf("bad zone: exit %d, stderr %q", res.code, res.stderr)
	}

	if got := kernOK("schedules", "delete", "morning"); got != "deleted\n" {
		t.Fatalf("delete printed %q", got)
	}
	res = runKern(t, ctx, "", nil, append(db, "schedules", "delete", "morning")...)
	if res.code != 1 || !strings.Contains(res.stderr, "schedule morning: not found") {
		t.Fatalf("second delete: exit %d, stderr %q", res.code, res.stderr)
	}
	if got := kernOK("schedules", "list", "--json"); !strings.Contains(got, `"poll"`) || strings.Contains(got, `"morning"`) {
		t.Fatalf("list after delete: %s", got)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestVersionAndCompletion(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 2*time.Minute)
	res := runKern(t, ctx, "", nil, "version")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "kern ") || !strings.Contains(res.stdout, "(go1.") {
		t.Fatalf("version: exit %d, %q, %q", res.code, res.stdout, res.stderr)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		res := runKern(t, ctx, "", nil, "completion", shell)
		if res.code != 0 || !strings.Contains(res.stdout, "kern") {
			t.Fatalf("completion %s: exit %d, stderr %q", shell, res.code, res.stderr)
		}
	}
	// Every command has an Example in its --help (those of this change must;
	// others are logged).
	mine := map[string]bool{"kern": true, "kern migrate": true, "kern worker": true, "kern version": true,
		"kern runs approve": true, "kern runs reject": true, "kern runs answer": true, "kern schedules": true,
		"kern schedules put": true, "kern schedules list": true, "kern schedules delete": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			if mine[c.CommandPath()] {
				t.Errorf("%s has no Example", c.CommandPath())
			} else {
				t.Logf("%s has no Example", c.CommandPath())
			}
		}
		delete(mine, c.CommandPath())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	if len(mine) != 0 {
		t.Errorf("commands missing: %v", mine)
	}
}

// The example in the cookbook is a valid file.
func TestConfigCookbookExample(t *testing.T) {
	t.Parallel()
	f, err := loadWorkerFile("../../cookbook/worker/agents.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.names(), ","); got != "assistant,researcher,summarizer" {
		t.Fatalf("agents %s", got)
	}
	if f.Agents[1].API != "responses" || f.Worker.MaxConcurrentRuns != 10 || f.Worker.Retention != 24*time.Hour {
		t.Fatalf("parsed %+v", f)
	}
}
