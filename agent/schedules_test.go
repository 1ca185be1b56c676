package agent_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// scheduledRuns lists the runs a schedule fired, oldest first.
func scheduledRuns(t *testing.T, d *db.DB, name string) []*run.Output {
	t.Helper()
	page, err := d.ListRuns(context.Background(), run.ListParams{Name: name, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	runs := page.Runs
	slices.Reverse(runs) // ListRuns is newest first
	return runs
}

func scheduleByName(t *testing.T, d *db.DB, name string) *run.Schedule {
	t.Helper()
	list, err := d.ListSchedules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no schedule %q", name)
	return nil
}

func makeScheduleDue(t *testing.T, d *db.DB, name string, ago time.Duration) {
	t.Helper()
	tag, err := d.Pool().Exec(context.Background(),
		`UPDATE kern_schedule SET next_run_at = now() - make_interval(secs => $2) WHERE name = $1`, name, ago.Seconds())
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("make %q due: %v", name, err)
	}
}

// TestScheduleEverySecondThreeWorkers: three workers (three DBs, as three
// processes would have) serve the agent of an "@every 1s" schedule; each
// due time fires one run, whichever worker gets there first.
func TestScheduleEverySecondThreeWorkers(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	_, model := kerntest.Model(t)
	var first *agent.Agent
	for range 3 {
		d := kerntest.Open(t, url)
		a := &agent.Agent{Name: "assistant", Model: model, DB: d}
		kerntest.Worker(t, d, agent.WorkerConfig{}, a)
		if first == nil {
			first = a
		}
	}
	d := first.DB
	s, err := d.PutSchedule(context.Background(), run.Schedule{Name: "tick", AgentName: "assistant",
		Prompt: "tick", Cron: "@every 1s", SessionID: "ticks", Metadata: map[string]any{"from": "schedule"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const want = 5
	waitFor(t, 20*time.Second, "five scheduled runs", func() bool { return len(scheduledRuns(t, d, "tick")) >= want })
	elapsed := time.Since(start)
	runs := scheduledRuns(t, d, "tick")
	// Due times are one second apart, from s.NextRunAt on: no more runs
	// than due times passed, and never two at once. (A firing may come late
	// under load and the next one on time, so runs of consecutive due times
	// can be much less than a second apart; two workers firing one due time
	// would both do so right at it, milliseconds apart. The exact one run
	// per due time is db's TestScheduleFireRace.)
	if limit := int(time.Since(s.NextRunAt)/time.Second) + 1; len(runs) > limit {
		t.Fatalf("%d runs in %v since the first due time; at most %d due times passed", len(runs), time.Since(s.NextRunAt), limit)
	}
	for i, r := range runs {
		if r.Name != "tick" || r.SessionID != "ticks" || r.Input != "tick" || r.Metadata["from"] != "schedule" {
			t.Fatalf("run %d: %+v", i, r)
		}
		if i > 0 {
			if gap := r.CreatedAt.Sub(runs[i-1].CreatedAt); gap < 20*time.Millisecond {
				t.Errorf("runs %d and %d created %v apart: two runs for one due time", i-1, i, gap)
			}
		}
	}
	t.Logf("%d runs in %v", len(runs), elapsed)
	// The schedule row and its run commit together: the run LastRunID
	// names is there to list.
	got := scheduleByName(t, d, "tick")
	if !slices.ContainsFunc(scheduledRuns(t, d, "tick"), func(r *run.Output) bool { return r.RunID == got.LastRunID }) {
		t.Fatalf("LastRunID %q is none of the fired runs", got.LastRunID)
	}
	// They are ordinary background runs: the workers execute them.
	if out := mustWait(t, first, runs[0].RunID); out.Status != run.StatusCompleted {
		t.Fatalf("first scheduled run: %+v", out)
	}
	if err := d.DeleteSchedule(context.Background(), "tick"); err != nil {
		t.Fatal(err)
	}
}

// TestScheduleCatchUpOnceAfterDowntime: a schedule whose due time passed an
// hour ago, with a tick every minute missed meanwhile, fires once when a
// worker comes, and is next due in the future.
func TestScheduleCatchUpOnceAfterDowntime(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	if _, err := d.PutSchedule(context.Background(), run.Schedule{Name: "minutely", AgentName: "assistant",
		Prompt: "hi", Cron: "* * * * *"}); err != nil {
		t.Fatal(err)
	}
	makeScheduleDue(t, d, "minutely", time.Hour)
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	waitFor(t, 10*time.Second, "the catch-up run", func() bool { return scheduleByName(t, d, "minutely").LastRunID != "" })
	s := scheduleByName(t, d, "minutely")
	runs := scheduledRuns(t, d, "minutely")
	if len(runs) != 1 || runs[0].RunID != s.LastRunID {
		t.Fatalf("runs after catch-up: %d (last %q); want one, the LastRunID", len(runs), s.LastRunID)
	}
	if !s.NextRunAt.After(time.Now()) || time.Until(s.NextRunAt) > time.Minute {
		t.Fatalf("NextRunAt %v; want the next minute", s.NextRunAt)
	}
}

// TestScheduleNotFiredPausedOrUnserved: a paused schedule and one for an
// agent no worker serves stay unfired, while one the worker serves fires
// (twice, so the worker has looked at all of them since they came due).
func TestScheduleNotFiredPausedOrUnserved(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	_, model := kerntest.Model(t)
	ctx := context.Background()
	for _, s := range []run.Schedule{
		{Name: "control", AgentName: "assistant", Prompt: "hi", Cron: "@every 1s"},
		{Name: "paused", AgentName: "assistant", Prompt: "hi", Cron: "@every 1s", Paused: true},
		{Name: "unserved", AgentName: "nobody", Prompt: "hi", Cron: "@every 1s"},
	} {
		if _, err := d.PutSchedule(ctx, s); err != nil {
			t.Fatal(err)
		}
		makeScheduleDue(t, d, s.Name, time.Minute)
	}
	a := &agent.Agent{Name: "assistant", Model: model, DB: d}
	kerntest.Worker(t, d, agent.WorkerConfig{}, a)
	waitFor(t, 15*time.Second, "two runs of the control schedule", func() bool { return len(scheduledRuns(t, d, "control")) >= 2 })
	for _, name := range []string{"paused", "unserved"} {
		if s := scheduleByName(t, d, name); s.LastRunID != "" || len(scheduledRuns(t, d, name)) != 0 {
			t.Errorf("schedule %q fired: %+v", name, s)
		}
	}
	// Unpaused (a replace), it fires.
	if _, err := d.PutSchedule(ctx, run.Schedule{Name: "paused", AgentName: "assistant", Prompt: "hi", Cron: "@every 1s"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the unpaused schedule's run", func() bool { return scheduleByName(t, d, "paused").LastRunID != "" })
}
