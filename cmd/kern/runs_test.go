package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// kern runs args… against the database at url; returns what it printed.
func kern(t *testing.T, ctx context.Context, url string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--database-url", url}, args...))
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("kern %s: %v (printed %q)", strings.Join(args, " "), err, out.String())
	}
	return out.String()
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

	// Without the flag: the run's JSON, as before.
	stored, err := d.GetRun(ctx, out.RunID)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent(stored, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	plain := kern(t, ctx, url, "runs", "get", out.RunID)
	if plain != string(js)+"\n" {
		t.Fatalf("runs get printed\n%s\nwant\n%s", plain, js)
	}

	// With it: the same, a blank line, then one line per message.
	got := kern(t, ctx, url, "runs", "get", out.RunID, "--transcript")
	want := plain + "\n" +
		"1 user      Weather and time in Paris?\n" +
		`2 assistant get_weather({"city":"Paris"}), get_time({"tz":"Europe/Paris"})` + "\n" +
		"3 tool      call_w: 18C and sunny, " + strings.Repeat("a", 200-len("18C and sunny, ")) + "…\n" +
		"4 tool      call_t: noon\n" +
		`5 assistant Sunny at noon.\nEnjoy.` + "\n"
	if got != want {
		t.Fatalf("runs get --transcript printed\n%s\nwant\n%s", got, want)
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
