package server_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/server"
)

// TestListChildrenOfRun: GET /v1/runs?parent_run_id= lists the children of
// the key's tenant's run of that id, never another tenant's of the same
// id; a run's JSON names its parent; a malformed id is a 400.
func TestListChildrenOfRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	ctx := t.Context()
	for _, tenant := range []struct{ name, key string }{{"acme", e.acme}, {"globex", e.globex}} {
		e.do(t, tenant.key, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "Say hello", "run_id": "root"}).
			expect(t, http.StatusAccepted)
		tdb, err := e.db.ForTenant(tenant.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tdb.SubmitRun(ctx, db.SubmitParams{RunID: tenant.name + "-kid", AgentName: "assistant", Input: "Say hello",
			Enqueue: true, ParentRunID: "root"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tenant := range []struct{ name, key string }{{"acme", e.acme}, {"globex", e.globex}} {
		kid := tenant.name + "-kid"
		if ids := e.runIDs(t, tenant.key, "/v1/runs?parent_run_id=root"); !slices.Equal(ids, []string{kid}) {
			t.Fatalf("%s lists the children of root as %v, want [%s]", tenant.name, ids, kid)
		}
		if got := e.do(t, tenant.key, "GET", "/v1/runs/"+kid, nil).expect(t, http.StatusOK).object(t); got["parent_run_id"] != "root" {
			t.Fatalf("%s's child: parent_run_id %v, want root", tenant.name, got["parent_run_id"])
		}
		if got := e.do(t, tenant.key, "GET", "/v1/runs/root", nil).expect(t, http.StatusOK).object(t); got["parent_run_id"] != "" {
			t.Fatalf("%s's top-level run: parent_run_id %v, want \"\"", tenant.name, got["parent_run_id"])
		}
	}
	if ids := e.runIDs(t, e.acme, "/v1/runs?parent_run_id=acme-kid"); len(ids) != 0 {
		t.Fatalf("the children of a childless run: %v", ids)
	}
	e.do(t, e.acme, "GET", "/v1/runs?parent_run_id=%01", nil).expectProblem(t, http.StatusBadRequest)
}
