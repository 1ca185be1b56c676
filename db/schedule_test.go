package db_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func putSchedule(t *testing.T, d *db.DB, s run.Schedule) *run.Schedule {
	t.Helper()
	out, err := d.PutSchedule(context.Background(), s)
	if err != nil {
		t.Fatalf("put schedule %q: %v", s.Name, err)
	}
	return out
}

// makeDue moves a schedule's next due time into the past, as if no worker
// had run since.
func makeDue(t *testing.T, d *db.DB, name string, ago time.Duration) {
	t.Helper()
	tag, err := d.Pool().Exec(context.Background(),
		`UPDATE kern_schedule SET next_run_at = now() - make_interval(secs => $2) WHERE name = $1`, name, ago.Seconds())
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("make %q due: %v (%d rows)", name, err, tag.RowsAffected())
	}
}

func scheduleNamed(t *testing.T, d *db.DB, name string) *run.Schedule {
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

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	ok := run.Schedule{Name: "s", AgentName: "a", Prompt: "hi", Cron: "0 7 * * *"}
	for _, c := range []struct {
		what string
		edit func(*run.Schedule)
		want string
	}{
		{"no name", func(s *run.Schedule) { s.Name = "" }, "name is empty"},
		{"no agent", func(s *run.Schedule) { s.AgentName = "" }, "agent name is empty"},
		{"no prompt", func(s *run.Schedule) { s.Prompt = "  " }, "prompt is empty"},
		{"empty cron", func(s *run.Schedule) { s.Cron = "" }, "cron is empty"},
		{"bad cron", func(s *run.Schedule) { s.Cron = "every day at 7" }, "does not parse"},
		{"six fields", func(s *run.Schedule) { s.Cron = "0 0 7 * * *" }, "does not parse"},
		{"minute 60", func(s *run.Schedule) { s.Cron = "60 * * * *" }, "does not parse"},
		{"unknown descriptor", func(s *run.Schedule) { s.Cron = "@fortnightly" }, "does not parse"},
		{"every nothing", func(s *run.Schedule) { s.Cron = "@every" }, "not a duration"},
		{"every junk", func(s *run.Schedule) { s.Cron = "@every soon" }, "not a duration"},
		{"every sub-second", func(s *run.Schedule) { s.Cron = "@every 500ms" }, "at least 1s"},
		{"every negative", func(s *run.Schedule) { s.Cron = "@every -5s" }, "at least 1s"},
		{"every fractional", func(s *run.Schedule) { s.Cron = "@every 1.5s" }, "whole seconds"},
		{"zone in cron", func(s *run.Schedule) { s.Cron = "TZ=Europe/Paris 0 7 * * *" }, "set Timezone"},
		{"zone in cron, no space", func(s *run.Schedule) { s.Cron = "CRON_TZ=UTC" }, "set Timezone"},
		{"never due", func(s *run.Schedule) { s.Cron = "0 0 30 2 *" }, "never comes due"},
		{"unknown zone", func(s *run.Schedule) { s.Timezone = "Mars/Olympus_Mons" }, "unknown time zone"},
		{"local zone", func(s *run.Schedule) { s.Timezone = "Local" }, "differs from host to host"},
		{"metadata too big", func(s *run.Schedule) { s.Metadata = map[string]any{"x": strings.Repeat("x", 1<<20)} }, "metadata is"},
		{"metadata not JSON", func(s *run.Schedule) { s.Metadata = map[string]any{"f": func() {}} }, "not JSON-encodable"},
		{"NUL in prompt", func(s *run.Schedule) { s.Prompt = "a\x00b" }, "NUL"},
		{"long name", func(s *run.Schedule) { s.Name = strings.Repeat("n", 256) }, "more than 255"},
	} {
		s := ok
		c.edit(&s)
		_, err := d.PutSchedule(ctx, s)
		if !errors.Is(err, run.ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v; want ErrInvalidArgument saying %q", c.what, err, c.want)
		}
	}
	list, err := d.ListSchedules(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("after invalid puts: %d schedules, %v; want none", len(list), err)
	}
	for _, c := range []string{"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
		"@every 1s", "@every 90m", "*/5 * * * *", "0 9-17 * * MON-FRI", " 30 6 1 * * "} {
		s := ok
		s.Cron = c
		if _, err := d.PutSchedule(ctx, s); err != nil {
			t.Errorf("cron %q: %v", c, err)
		}
	}
}

func TestScheduleNextRunAtTimezone(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	utc := putSchedule(t, d, run.Schedule{Name: "utc", AgentName: "a", Prompt: "hi", Cron: "0 7 * * *"})
	fr := putSchedule(t, d, run.Schedule{Name: "paris", AgentName: "a", Prompt: "hi", Cron: "0 7 * * *", Timezone: "Europe/Paris"})
	if utc.Timezone != "UTC" || fr.Timezone != "Europe/Paris" {
		t.Fatalf("zones: %q, %q", utc.Timezone, fr.Timezone)
	}
	for _, c := range []struct {
		s   *run.Schedule
		loc *time.Location
	}{{utc, time.UTC}, {fr, paris}} {
		at := c.s.NextRunAt.In(c.loc)
		if at.Hour() != 7 || at.Minute() != 0 || at.Second() != 0 || at.Nanosecond() != 0 {
			t.Errorf("%s: NextRunAt %v is not 07:00 %s", c.s.Name, at, c.loc)
		}
		if !at.After(before) || at.Sub(before) > 24*time.Hour+time.Minute {
			t.Errorf("%s: NextRunAt %v is not the next 07:00 after %v", c.s.Name, at, before)
		}
		if c.s.NextRunAt.Location().String() != c.loc.String() {
			t.Errorf("%s: NextRunAt given in %v, want its zone %v", c.s.Name, c.s.NextRunAt.Location(), c.loc)
		}
	}
	if utc.NextRunAt.Equal(fr.NextRunAt) {
		t.Errorf("07:00 UTC and 07:00 Paris are the same instant: %v", utc.NextRunAt)
	}
	// As read back, too.
	if got := scheduleNamed(t, d, "paris"); !got.NextRunAt.Equal(fr.NextRunAt) || got.NextRunAt.In(paris).Hour() != 7 {
		t.Errorf("listed: %v; put returned %v", got.NextRunAt, fr.NextRunAt)
	}

	every := putSchedule(t, d, run.Schedule{Name: "every", AgentName: "a", Prompt: "hi", Cron: "@every 1h"})
	if in := time.Until(every.NextRunAt); in < 59*time.Minute || in > time.Hour+time.Second {
		t.Errorf("@every 1h: due in %v", in)
	}
}

func TestSchedulePutListDeleteReplace(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	st := d.Engine(engine.Key{})
	putSchedule(t, d, run.Schedule{Name: "b", AgentName: "a", Prompt: "hi", Cron: "@hourly"})
	first := putSchedule(t, d, run.Schedule{Name: "a", AgentName: "a", Prompt: "one", Cron: "@daily",
		SessionID: "s1", Metadata: map[string]any{"n": 1.0}})
	list, err := d.ListSchedules(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Fatalf("list: %v, %v; want a, b", list, err)
	}
	if a := list[0]; a.Prompt != "one" || a.Cron != "@daily" || a.SessionID != "s1" || a.Metadata["n"] != 1.0 ||
		a.Paused || a.LastRunID != "" || a.CreatedAt.IsZero() {
		t.Fatalf("stored: %+v", a)
	}

	makeDue(t, d, "a", time.Minute)
	res, err := st.FireSchedules(ctx, []string{"a"}, 100)
	if err != nil || len(res.Runs) != 1 {
		t.Fatalf("fire: %+v, %v", res, err)
	}
	// A replace keeps LastRunID and created_at, and recomputes NextRunAt.
	repl := putSchedule(t, d, run.Schedule{Name: "a", AgentName: "a", Prompt: "two", Cron: "@every 10s", Paused: true})
	if repl.LastRunID != res.Runs[0] || !repl.CreatedAt.Equal(first.CreatedAt) || repl.Prompt != "two" || !repl.Paused ||
		repl.SessionID != "" || len(repl.Metadata) != 0 {
		t.Fatalf("replaced: %+v; want LastRunID %s, CreatedAt %v", repl, res.Runs[0], first.CreatedAt)
	}
	if in := time.Until(repl.NextRunAt); in <= 0 || in > 11*time.Second {
		t.Fatalf("replaced NextRunAt in %v; want within 10s", in)
	}

	if err := d.DeleteSchedule(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteSchedule(ctx, "a"); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("delete again: %v; want ErrNotFound", err)
	}
	if list, _ := d.ListSchedules(ctx); len(list) != 1 || list[0].Name != "b" {
		t.Fatalf("after delete: %v", list)
	}
	// The run it fired stays.
	if _, err := d.GetRun(ctx, res.Runs[0]); err != nil {
		t.Fatalf("fired run after delete: %v", err)
	}
}

func TestScheduleFireCatchUpOnce(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	st := d.Engine(engine.Key{})
	putSchedule(t, d, run.Schedule{Name: "daily-report", AgentName: "a", Prompt: "report", Cron: "@every 1m",
		SessionID: "s", Metadata: map[string]any{"k": "v", "big": uint64(12345678901234567890)}})
	res, err := st.FireSchedules(ctx, []string{"a"}, 100)
	if err != nil || len(res.Runs) != 0 || !res.HasNext || res.Next <= 0 || res.Next > time.Minute {
		t.Fatalf("not due yet: %+v, %v", res, err)
	}

	makeDue(t, d, "daily-report", time.Hour) // 60 ticks missed
	res, err = st.FireSchedules(ctx, []string{"a"}, 100)
	if err != nil || len(res.Runs) != 1 {
		t.Fatalf("catch-up: %+v, %v; want one run", res, err)
	}
	if !res.HasNext || res.Next <= 0 {
		t.Fatalf("after catch-up: next in %v (%v); want in the future", res.Next, res.HasNext)
	}
	s := scheduleNamed(t, d, "daily-report")
	if s.LastRunID != res.Runs[0] || !s.NextRunAt.After(time.Now()) {
		t.Fatalf("schedule after firing: %+v", s)
	}
	out, err := d.GetRun(ctx, res.Runs[0])
	if err != nil {
		t.Fatal(err)
	}
	if out.Name != "daily-report" || out.AgentName != "a" || out.Input != "report" || out.SessionID != "s" ||
		out.Status != run.StatusPending || out.Metadata["k"] != "v" || out.Metadata["big"] != 12345678901234567890.0 {
		t.Fatalf("fired run: %+v", out)
	}
	var text string
	if err := d.Pool().QueryRow(ctx, `SELECT metadata::text FROM kern_run WHERE id = $1`, out.RunID).Scan(&text); err != nil ||
		!strings.Contains(text, "12345678901234567890") {
		t.Fatalf("fired run's metadata %s, %v: the number changed", text, err)
	}
	var jobs int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job j JOIN kern_run r ON r.job_id = j.id WHERE r.id = $1`,
		out.RunID).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("fired run's job: %d, %v", jobs, err)
	}
	res, err = st.FireSchedules(ctx, []string{"a"}, 100)
	if err != nil || len(res.Runs) != 0 {
		t.Fatalf("fire again: %+v, %v; want nothing", res, err)
	}
}

func TestScheduleFireSkipsPausedAndOtherAgents(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	st := d.Engine(engine.Key{})
	putSchedule(t, d, run.Schedule{Name: "paused", AgentName: "a", Prompt: "hi", Cron: "@every 1s", Paused: true})
	putSchedule(t, d, run.Schedule{Name: "other", AgentName: "b", Prompt: "hi", Cron: "@every 1s"})
	makeDue(t, d, "paused", time.Hour)
	makeDue(t, d, "other", time.Hour)
	res, err := st.FireSchedules(ctx, []string{"a", "c"}, 100)
	if err != nil || len(res.Runs) != 0 || res.HasNext {
		t.Fatalf("fire: %+v, %v; want nothing fired, nothing next", res, err)
	}
	res, err = st.FireSchedules(ctx, []string{"b"}, 100)
	if err != nil || len(res.Runs) != 1 {
		t.Fatalf("fire b: %+v, %v; want one run", res, err)
	}
	if s := scheduleNamed(t, d, "paused"); s.LastRunID != "" {
		t.Fatalf("paused schedule fired: %+v", s)
	}
}

func TestScheduleFireLimit(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	st := d.Engine(engine.Key{})
	for _, n := range []string{"s1", "s2", "s3"} {
		putSchedule(t, d, run.Schedule{Name: n, AgentName: "a", Prompt: "hi", Cron: "@hourly"})
		makeDue(t, d, n, time.Minute)
	}
	res, err := st.FireSchedules(ctx, []string{"a"}, 2)
	if err != nil || len(res.Runs) != 2 || !res.HasNext || res.Next > 0 {
		t.Fatalf("first pass: %+v, %v; want 2 runs and one still due", res, err)
	}
	res, err = st.FireSchedules(ctx, []string{"a"}, 2)
	if err != nil || len(res.Runs) != 1 || res.Next <= 0 {
		t.Fatalf("second pass: %+v, %v; want the third", res, err)
	}
}

// TestScheduleFireRace: passes of several processes (DBs) at once, again
// and again: each due time fires exactly once.
func TestScheduleFireRace(t *testing.T) {
	t.Parallel()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)
	dbs := []*db.DB{kerntest.Open(t, url), kerntest.Open(t, url), kerntest.Open(t, url)}
	for _, n := range []string{"x", "y"} {
		putSchedule(t, dbs[0], run.Schedule{Name: n, AgentName: "a", Prompt: "hi", Cron: "@hourly"})
	}
	const rounds = 20
	for round := range rounds {
		makeDue(t, dbs[0], "x", time.Hour)
		makeDue(t, dbs[0], "y", time.Minute)
		var mu sync.Mutex
		var fired []string
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				res, err := dbs[i%len(dbs)].Engine(engine.Key{}).FireSchedules(ctx, []string{"a"}, 100)
				if err != nil {
					t.Errorf("round %d: fire: %v", round, err)
				}
				mu.Lock()
				fired = append(fired, res.Runs...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(fired) != 2 {
			t.Fatalf("round %d: %d runs fired (%v); want 2, one per schedule", round, len(fired), fired)
		}
	}
	var runs int
	if err := dbs[0].Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run`).Scan(&runs); err != nil || runs != 2*rounds {
		t.Fatalf("runs: %d, %v; want %d", runs, err, 2*rounds)
	}
}
