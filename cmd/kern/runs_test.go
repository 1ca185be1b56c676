package main

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

func TestMain(m *testing.M) {
	binaryOnce.Do(buildKernBinary) // before any test's deadline runs
	pgtest.Main(m)
}

type result = kernResult

// kernExec runs the kern binary (kernBinary, built once) with args against
// url, stdin as its stdin.
func kernExec(t *testing.T, ctx context.Context, url, stdin string, args ...string) result {
	t.Helper()
	return runKern(t, ctx, stdin, []string{"NO_COLOR="}, append([]string{"--database-url", kerntest.WithPoolSize(url, 2)}, args...)...)
}

// kern runs kern and fails the test unless it exits 0; returns stdout.
func kern(t *testing.T, ctx context.Context, url string, args ...string) string {
	t.Helper()
	r := kernExec(t, ctx, url, "", args...)
	if r.code != 0 {
		t.Fatalf("kern %s: exit %d, stderr %q, stdout %q", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// env is a database with a worker serving agent "assistant" on the fake
// model, and agent "idle" that no worker serves.
type env struct {
	url   string
	db    *db.DB
	fake  *fakellm.Server
	agent *agent.Agent
	idle  *agent.Agent
}

func newEnv(t *testing.T, tools ...agent.Tool) *env {
	t.Helper()
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	fake, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d, Tools: tools}
	kerntest.Worker(t, d, agent.WorkerConfig{MaxAttempts: 1}, a)
	return &env{url: url, db: d, fake: fake, agent: a, idle: &agent.Agent{Name: "idle", Model: model, DB: d}}
}

// sameAsStored fails unless js is db.MarshalRun of the stored run.
func (e *env) sameAsStored(t *testing.T, ctx context.Context, js json.RawMessage) string {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, js)
	}
	id, _ := got["run_id"].(string)
	stored, err := e.db.GetRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	wantJS, err := db.MarshalRun(stored)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(wantJS, &want); err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("run %s: %s = %v, want %v", id, k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("run %s: %d fields, want %d: %v", id, len(got), len(want), got)
	}
	return id
}

func TestRunsGetTranscript(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	fake, model := kerntest.Model(t)
	longOutput := "  18C and sunny, " + strings.Repeat("a", 300) + "\nsecond line"
	a := &agent.Agent{Name: "assistant", Model: model, DB: d, Tools: []agent.Tool{
		{Name: "get_weather", Call: func(context.Context, json.RawMessage) (string, error) { return longOutput, nil }},
		{Name: "get_time", Call: func(context.Context, json.RawMessage) (string, error) { return "noon", nil }},
	}}
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		if req.Messages[len(req.Messages)-1].Role == "tool" {
			return fakellm.Reply{Content: "Sunny at noon.\nEnjoy."}
		}
		return fakellm.Reply{Content: "Looking.", ToolCalls: []fakellm.ToolCall{
			{ID: "call_w", Name: "get_weather", Arguments: "{\n  \"city\": \"Paris\"\n}"},
			{ID: "call_t", Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`},
		}}
	})
	out, err := a.Run(ctx, "Weather and time in Paris?")
	if err != nil || out.Status != run.StatusCompleted {
		t.Fatalf("run: %+v, %v", out, err)
	}
	e := &env{url: url, db: d}

	// --json: the run's JSON as the API shows it.
	plain := kern(t, ctx, url, "runs", "get", "--json", out.RunID)
	e.sameAsStored(t, ctx, json.RawMessage(plain))

	// --transcript: the same, a blank line, then one line per message.
	transcript := "\n" +
		"1 user      Weather and time in Paris?\n" +
		`2 assistant get_weather({"city":"Paris"}), get_time({"tz":"Europe/Paris"})` + "\n" +
		"3 tool      call_w: 18C and sunny, " + strings.Repeat("a", 200-len("18C and sunny, ")) + "…\n" +
		"4 tool      call_t: noon\n" +
		`5 assistant Sunny at noon.\nEnjoy.` + "\n"
	if got := kern(t, ctx, url, "runs", "get", "--json", out.RunID, "--transcript"); got != plain+transcript {
		t.Fatalf("runs get --json --transcript printed\n%s\nwant\n%s", got, plain+transcript)
	}
	human := kern(t, ctx, url, "runs", "get", out.RunID, "--transcript")
	if !strings.HasSuffix(human, "\nSunny at noon.\nEnjoy.\n"+transcript) || !strings.Contains(human, "status:    completed\n") {
		t.Fatalf("runs get --transcript printed\n%s", human)
	}
}

var (
	agoRE   = regexp.MustCompile(`(just now|\d+[smhd] ago) *`)
	idColRE = regexp.MustCompile(`(?m)^[0-9a-f-]{8,} +`)
)

func TestRunsListTable(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	e := newEnv(t)
	var ids []string
	for i, p := range []string{"first prompt", "second\nprompt", strings.Repeat("long ", 20)} {
		out, err := e.idle.Run(ctx, p, agent.Background(true), agent.WithName(fmt.Sprint("job-", i)), agent.WithSessionID("s1"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append([]string{out.RunID}, ids...) // newest first
	}
	got := kern(t, ctx, e.url, "runs", "list", "--agent", "idle")
	if strings.Contains(got, "\x1b") {
		t.Fatalf("colours on a pipe:\n%q", got)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("list printed\n%s", got)
	}
	short := map[string]bool{}
	for i, l := range lines[1:] {
		id, _, _ := strings.Cut(l, " ")
		if len(id) < 8 || !strings.HasPrefix(ids[i], id) || short[id] {
			t.Fatalf("line %d: short id %q of %s (not a unique prefix of ≥ 8)", i, id, ids[i])
		}
		short[id] = true
	}
	norm := agoRE.ReplaceAllString(idColRE.ReplaceAllString(got, "<id> "), "<ago> ")
	norm = regexp.MustCompile(`^ID +`).ReplaceAllString(norm, "ID   ")
	norm = regexp.MustCompile(`CREATED +`).ReplaceAllString(norm, "CREATED  ")
	want := "" +
		"ID   STATUS   AGENT  NAME   CREATED  DURATION  INPUT\n" +
		"<id> pending  idle   job-2  <ago> -         long long long long long long long long…\n" +
		"<id> pending  idle   job-1  <ago> -         second…\n" +
		"<id> pending  idle   job-0  <ago> -         first prompt\n"
	if norm != want {
		t.Fatalf("list printed (normalised)\n%s\nwant\n%s\nraw\n%s", norm, want, got)
	}

	// --wide: full ids; filters; paging with the cursor hint on stderr.
	if wide := kern(t, ctx, e.url, "runs", "list", "--agent", "idle", "--wide"); !strings.Contains(wide, ids[0]+" ") || !strings.Contains(wide, "SESSION") {
		t.Fatalf("list --wide printed\n%s", wide)
	}
	if one := kern(t, ctx, e.url, "runs", "list", "--name", "job-1", "--json"); e.listIDs(t, ctx, one)[0] != ids[1] {
		t.Fatalf("list --name printed %s", one)
	}
	r := kernExec(t, ctx, e.url, "", "runs", "list", "--agent", "idle", "--limit", "2", "--json")
	m := regexp.MustCompile(`--cursor (\S+)`).FindStringSubmatch(r.stderr)
	if r.code != 0 || m == nil || !reflect.DeepEqual(e.listIDs(t, ctx, r.stdout), ids[:2]) {
		t.Fatalf("list --limit 2: %+v", r)
	}
	r = kernExec(t, ctx, e.url, "", "runs", "list", "--agent", "idle", "--limit", "2", "--json", "--cursor", m[1])
	if r.code != 0 || r.stderr != "" || !reflect.DeepEqual(e.listIDs(t, ctx, r.stdout), ids[2:]) {
		t.Fatalf("list --cursor: %+v", r)
	}
	if none := kern(t, ctx, e.url, "runs", "list", "--agent", "idle", "--since", "1ns", "--json"); strings.TrimSpace(none) != "[]" {
		t.Fatalf("list --since 1ns printed %s", none)
	}
}

// listIDs parses a list --json array, checks each run against the stored
// one (a summary: every field but "content"), and returns the ids.
func (e *env) listIDs(t *testing.T, ctx context.Context, js string) []string {
	t.Helper()
	var arr []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(js), &arr); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, js)
	}
	ids := []string{}
	for _, r := range arr {
		if _, ok := r["content"]; ok {
			t.Fatalf("list --json carries content: %s", js)
		}
		var id string
		_ = json.Unmarshal(r["run_id"], &id)
		stored, err := e.db.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		r["content"], _ = json.Marshal(stored.Content)
		full, _ := json.Marshal(r)
		ids = append(ids, e.sameAsStored(t, ctx, full))
	}
	return ids
}

func TestRunsSubmitJSON(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	e := newEnv(t)
	out := kern(t, ctx, e.url, "runs", "submit", "--agent", "assistant", "--json", "--name", "n1", "--session", "s1",
		"--metadata", "team=docs", "--metadata", "k=v=w", "--idempotency-key", "key-1", "--priority", "3", "--delay", "1h", "hello")
	id := e.sameAsStored(t, ctx, json.RawMessage(out))
	stored, _ := e.db.GetRun(ctx, id)
	if stored.Name != "n1" || stored.SessionID != "s1" || stored.Input != "hello" ||
		!reflect.DeepEqual(stored.Metadata, map[string]any{"team": "docs", "k": "v=w"}) {
		t.Fatalf("stored %+v", stored)
	}
	// The same key: the same run (delayed an hour, it stays pending). The
	// prompt from stdin.
	r := kernExec(t, ctx, e.url, "from stdin\n", "runs", "submit", "--agent", "assistant", "--json", "--idempotency-key", "key-1")
	if r.code != 0 || e.sameAsStored(t, ctx, json.RawMessage(r.stdout)) != id {
		t.Fatalf("second submit: %+v", r)
	}
	r = kernExec(t, ctx, e.url, "from stdin\n", "runs", "submit", "--agent", "idle", "--json", "-")
	if r.code != 0 || !strings.Contains(r.stdout, `"input": "from stdin\n"`) {
		t.Fatalf("submit -: %+v", r)
	}
	for _, args := range [][]string{
		{"runs", "submit", "--metadata", "novalue", "x"},
		{"runs", "submit", "--priority", "9", "x"},
		{"runs", "submit", "--follow", "--json", "--agent", "idle", "x"},
	} {
		if r := kernExec(t, ctx, e.url, "", args...); r.code != 1 || r.stderr == "" {
			t.Errorf("kern %v: %+v, want exit 1 and an error", args, r)
		}
	}
}

func TestRunsWaitExitCodes(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t, agent.Tool{Name: "delete", NeedsApproval: true,
		Call: func(context.Context, json.RawMessage) (string, error) { return "done", nil }})
	e.fake.Script(func(req fakellm.Request) fakellm.Reply {
		last := req.Messages[len(req.Messages)-1]
		if strings.Contains(last.Content, "please delete") {
			return fakellm.Reply{ToolCalls: []fakellm.ToolCall{{ID: "c1", Name: "delete", Arguments: `{"path":"a"}`}}}
		}
		return fakellm.DefaultReply(req)
	})

	// completed: 0, and the JSON is the stored run.
	r := kernExec(t, ctx, e.url, "", "runs", "submit", "--wait", "--json", "capital of France?")
	if r.code != 0 {
		t.Fatalf("submit --wait: %+v", r)
	}
	done := e.sameAsStored(t, ctx, json.RawMessage(r.stdout))
	if r := kernExec(t, ctx, e.url, "", "runs", "wait", "--json", done); r.code != 0 || !strings.Contains(r.stdout, `"status": "completed"`) {
		t.Fatalf("wait completed: %+v", r)
	}
	// error: 1.
	r = kernExec(t, ctx, e.url, "", "runs", "submit", "--wait", "[fake:status=400] hi")
	if r.code != 1 || !strings.Contains(r.stderr, "ended as error") || !strings.Contains(r.stdout, "status:") {
		t.Fatalf("wait error: %+v", r)
	}
	// waiting for an answer: 4.
	r = kernExec(t, ctx, e.url, "", "runs", "submit", "--wait", "--json", "please delete a")
	if r.code != 4 || !strings.Contains(r.stderr, "c1 delete") || !strings.Contains(r.stdout, `"status": "waiting"`) {
		t.Fatalf("wait waiting: %+v", r)
	}
	// timed out: 3, on a run no worker serves; then cancelled: 2.
	pending, err := e.idle.Run(ctx, "nobody serves me", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	r = kernExec(t, ctx, e.url, "", "runs", "wait", "--timeout", "300ms", "--json", pending.RunID)
	if r.code != 3 || !strings.Contains(r.stderr, "timed out") || !strings.Contains(r.stdout, `"status": "pending"`) {
		t.Fatalf("wait --timeout: %+v", r)
	}
	r = kernExec(t, ctx, e.url, "", "runs", "wait", "--follow", "--timeout", "300ms", pending.RunID)
	if r.code != 3 || !strings.Contains(r.stderr, "timed out") || r.stdout != "" {
		t.Fatalf("wait --follow --timeout: %+v", r)
	}
	r = kernExec(t, ctx, e.url, "", "runs", "submit", "--agent", "idle", "--wait", "--wait-timeout", "200ms", "--json", "x")
	if r.code != 3 || !strings.Contains(r.stdout, `"status": "pending"`) {
		t.Fatalf("submit --wait --wait-timeout: %+v", r)
	}
	if out := kern(t, ctx, e.url, "runs", "cancel", pending.RunID); out != "cancelled\n" {
		t.Fatalf("cancel printed %q", out)
	}
	if r := kernExec(t, ctx, e.url, "", "runs", "wait", pending.RunID); r.code != 2 || !strings.Contains(r.stderr, "cancelled") {
		t.Fatalf("wait cancelled: %+v", r)
	}
	// cancel of a finished run: 1.
	if r := kernExec(t, ctx, e.url, "", "runs", "cancel", done); r.code != 1 || r.stdout != "already finished: completed\n" {
		t.Fatalf("cancel completed: %+v", r)
	}
}

func TestRunsFollow(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	r := kernExec(t, ctx, e.url, "", "runs", "submit", "--follow", "Tell me a story [fake:words=40,chunk=3,drip=2ms]")
	id, ok := strings.CutPrefix(strings.TrimSpace(r.stderr), "submitted ")
	if r.code != 0 || !ok {
		t.Fatalf("submit --follow: %+v", r)
	}
	stored, err := e.db.GetRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// The content as stored, and a newline after it (the shell's prompt
	// starts a line of its own).
	if stored.Content == "" || strings.HasSuffix(stored.Content, "\n") || r.stdout != stored.Content+"\n" {
		t.Fatalf("followed %q\nstored   %q", r.stdout, stored.Content)
	}
	if again := kern(t, ctx, e.url, "runs", "wait", "--follow", id); again != stored.Content+"\n" {
		t.Fatalf("wait --follow printed %q", again)
	}

	// runs events: one line per event; --json lines; --after.
	lines := strings.Split(strings.TrimSuffix(kern(t, ctx, e.url, "runs", "events", id), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "1    run.started") || !strings.HasPrefix(lines[len(lines)-1], fmt.Sprintf("%-4d run.completed", len(lines))) {
		t.Fatalf("events printed\n%s", strings.Join(lines, "\n"))
	}
	jl := strings.Split(strings.TrimSuffix(kern(t, ctx, e.url, "runs", "events", "--json", "--after", "1", id), "\n"), "\n")
	var content strings.Builder
	for i, l := range jl {
		var ev struct {
			Seq  int64
			Type string
			Data struct{ Delta string }
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Seq != int64(i+2) {
			t.Fatalf("events --json line %d: %q (%v)", i, l, err)
		}
		if ev.Type == "content.delta" {
			content.WriteString(ev.Data.Delta)
		}
	}
	if content.String() != stored.Content || len(jl) != len(lines)-1 {
		t.Fatalf("events --json: %d lines, content %q", len(jl), content.String())
	}
	if f := kern(t, ctx, e.url, "runs", "events", "--follow", id); f != strings.Join(lines, "\n")+"\n" {
		t.Fatalf("events --follow printed\n%s", f)
	}
	// get --events: the run, a blank line, the log.
	if g := kern(t, ctx, e.url, "runs", "get", "--events", id); !strings.HasSuffix(g, "\n\n"+strings.Join(lines, "\n")+"\n") {
		t.Fatalf("get --events printed\n%s", g)
	}
}

func TestRunsUnknownAndBadFlags(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	url := kerntest.DatabaseURL(t)
	unknown := "01970c6e-8f5e-7b3a-9c1d-2e4f6a8b0c1d"
	for _, args := range [][]string{
		{"runs", "get", unknown},
		{"runs", "get", "--json", unknown},
		{"runs", "wait", unknown},
		{"runs", "wait", "--follow", unknown},
		{"runs", "events", unknown},
	} {
		r := kernExec(t, ctx, url, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "not found") || r.stdout != "" {
			t.Errorf("kern %v: %+v, want exit 1 saying not found", args, r)
		}
	}
	for _, args := range [][]string{
		{"runs", "get"},
		{"runs", "get", "not a uuid"},
		{"runs", "wait", "--timeout", "soon", unknown},
		{"runs", "list", "--limit", "-1"},
		{"runs", "list", "--cursor", "garbage"},
		{"runs", "list", "--bogus"},
		{"runs", "events", "--after", "-1", unknown},
		{"runs", "clear", "--status", "running"},
		{"runs", "wait", "--follow", "--json", unknown},
	} {
		r := kernExec(t, ctx, url, "", args...)
		if r.code != 1 || !strings.HasPrefix(r.stderr, "kern: ") || r.stdout != "" {
			t.Errorf("kern %v: %+v, want exit 1 and an error", args, r)
		}
	}
}

func TestRunsClearDryRun(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 30*time.Second)
	e := newEnv(t)
	for range 3 {
		if out, err := e.agent.Run(ctx, "hi"); err != nil || out.Status != run.StatusCompleted {
			t.Fatalf("run: %+v, %v", out, err)
		}
	}
	if _, err := e.idle.Run(ctx, "pending", agent.Background(true)); err != nil {
		t.Fatal(err)
	}
	if out := kern(t, ctx, e.url, "runs", "clear", "--older-than", "1h", "--dry-run"); out != "would delete 0 runs (dry run)\n" {
		t.Fatalf("dry run (1h) printed %q", out)
	}
	if out := kern(t, ctx, e.url, "runs", "clear", "--older-than", "0s", "--dry-run"); out != "would delete 3 runs (dry run)\n" {
		t.Fatalf("dry run printed %q", out)
	}
	if out := kern(t, ctx, e.url, "runs", "clear", "--older-than", "0s", "--status", "error", "--dry-run"); out != "would delete 0 runs (dry run)\n" {
		t.Fatalf("dry run --status error printed %q", out)
	}
	if out := kern(t, ctx, e.url, "runs", "clear", "--older-than", "0s"); out != "deleted 3 runs\n" {
		t.Fatalf("clear printed %q", out)
	}
	if left := e.listIDs(t, ctx, kern(t, ctx, e.url, "runs", "list", "--json")); len(left) != 1 {
		t.Fatalf("left %v", left)
	}
}

func TestEveryCommandHasAnExample(t *testing.T) {
	runs, _, err := newRootCmd().Find([]string{"runs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(runs.Commands(), runs) {
		if c.Example == "" {
			t.Errorf("kern runs %s: no Example", c.Name())
		}
	}
}

func TestFirstLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"ok", "ok"},
		{"  ok  \n", "ok"},
		{"\n\nfirst\r\nsecond", "first…"},
		{strings.Repeat("é", 201), strings.Repeat("é", 200) + "…"},
		{strings.Repeat("é", 200), strings.Repeat("é", 200)},
		{"", ""},
	} {
		if got := firstLine(tc.in, 200); got != tc.want {
			t.Errorf("firstLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
