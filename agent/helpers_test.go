package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// env is one test's kern: a database, a fake model, an agent and a worker.
type env struct {
	db    *db.DB
	model *fakellm.Server
	agent *agent.Agent
}

func newEnv(t *testing.T, cfg agent.WorkerConfig) *env {
	t.Helper()
	d := kerntest.DB(t)
	srv, model := kerntest.Model(t)
	a := &agent.Agent{Name: "assistant", Instructions: "Be brief.", Model: model, DB: d}
	kerntest.Worker(t, d, cfg, a)
	return &env{db: d, model: srv, agent: a}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustWait(t *testing.T, a *agent.Agent, runID string) *run.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := a.WaitRun(ctx, runID)
	if err != nil {
		t.Fatalf("wait run %s: %v", runID, err)
	}
	return out
}
