package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/server"
)

// A run's dashboard page links its parent and lists the runs below it,
// each linked with its status; another tenant's run of the same ids shows
// none of acme's tree.
func TestUIRunPageShowsTheTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	ctx := t.Context()
	const root, kid = "lead/1", "research 1"
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "Say hello", "run_id": root}).
		expect(t, http.StatusAccepted)
	e.do(t, e.globex, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "Say hello", "run_id": root}).
		expect(t, http.StatusAccepted)
	acme, err := e.db.ForTenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.SubmitRun(ctx, db.SubmitParams{RunID: kid, AgentName: "assistant", Input: "Say hello",
		Enqueue: true, ParentRunID: root}); err != nil {
		t.Fatal(err)
	}
	e.wait(t, e.acme, url.PathEscape(kid))

	c := newUIClient(t, e, e.acme)
	page := c.do("GET", "/ui/runs/"+url.PathEscape(root), nil).expect(t, http.StatusOK)
	found := false
	for _, l := range pageLinks(t, page.body) {
		if l.value == "/ui/runs/"+url.PathEscape(kid) {
			found = true
		}
	}
	if !found || !strings.Contains(string(page.body), `id="children"`) || !strings.Contains(string(page.body), "st-completed") {
		t.Fatalf("acme's root page does not list its child %q, completed:\n%s", kid, page.body)
	}
	kidPage := c.do("GET", "/ui/runs/"+url.PathEscape(kid), nil).expect(t, http.StatusOK)
	parent := false
	for _, l := range pageLinks(t, kidPage.body) {
		if l.value == "/ui/runs/"+url.PathEscape(root) {
			parent = true
		}
	}
	if !parent {
		t.Fatalf("the child's page does not link its parent %q:\n%s", root, kidPage.body)
	}

	other := newUIClient(t, e, e.globex).do("GET", "/ui/runs/"+url.PathEscape(root), nil).expect(t, http.StatusOK)
	if strings.Contains(string(other.body), kid) || strings.Contains(string(other.body), `id="children"`) {
		t.Fatalf("globex's run %q shows acme's child:\n%s", root, other.body)
	}
}
