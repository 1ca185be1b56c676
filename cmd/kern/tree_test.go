package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
)

// kern runs get --tree prints the runs below a run, indented by depth,
// with status and tokens, and the tree's total; --json one object per run
// below; a tenant sees its own tree only.
func TestRunsGetTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := kerntest.Context(t, 60*time.Second)
	submit := func(id, parent, agentName, tenant string) {
		t.Helper()
		if _, err := e.db.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: agentName, Input: "hi " + id, Enqueue: true, ParentRunID: parent, TenantID: tenant}); err != nil {
			t.Fatalf("submit %s: %v", id, err)
		}
	}
	submit("root", "", "assistant", "")
	submit("child", "root", "assistant", "")
	submit("grandchild", "child", "idle", "")
	submit("other", "", "assistant", "")
	for _, id := range []string{"root", "child"} {
		if _, err := e.agent.WaitRun(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var tokens [2]int
	for i, id := range []string{"root", "child"} {
		out, err := e.db.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = out.Metrics.TotalTokens
	}
	if tokens[0] == 0 || tokens[1] == 0 {
		t.Fatalf("the fake model reported no tokens: %v", tokens)
	}

	out := kern(t, ctx, e.url, "runs", "get", "--tree", "root")
	tree := out[strings.LastIndex(out, "\n\n")+2:]
	lines := strings.Split(strings.TrimSpace(tree), "\n")
	if len(lines) != 4 ||
		!strings.HasPrefix(lines[0], "root  assistant  completed") ||
		!strings.HasPrefix(lines[1], "└ child  assistant  completed") ||
		!strings.HasPrefix(lines[2], "  └ grandchild  idle  pending") ||
		!strings.HasPrefix(lines[3], "3 runs, ") {
		t.Fatalf("kern runs get --tree root printed:\n%s", tree)
	}
	if want := " " + strconv.Itoa(tokens[0]+tokens[1]) + " tokens in all"; !strings.Contains(lines[3], want) {
		t.Fatalf("total line %q; want %q", lines[3], want)
	}

	js := kern(t, ctx, e.url, "runs", "get", "--json", "--tree", "root")
	parts := strings.SplitN(js, "\n\n", 2)
	if len(parts) != 2 {
		t.Fatalf("--json --tree: no blank line between the run and the tree:\n%s", js)
	}
	dec := json.NewDecoder(strings.NewReader(parts[1]))
	var ids []string
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("--json --tree: %v\n%s", err, parts[1])
		}
		ids = append(ids, m["run_id"].(string)+"<"+m["parent_run_id"].(string))
	}
	if strings.Join(ids, ",") != "child<root,grandchild<child" {
		t.Fatalf("--json --tree runs below root: %v", ids)
	}

	// A tenant's view: the operator's tree is not its own.
	if r := kernExec(t, ctx, e.url, "", "runs", "get", "--tree", "--tenant", "acme", "root"); r.code == 0 {
		t.Fatalf("tenant acme read the operator's tree:\n%s", r.stdout)
	}
}
