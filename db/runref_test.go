package db_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func TestResolveRunIDPrefix(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submitAs(t, d, "", "abc")
	submitAs(t, d, "", "abcdef-1")
	submitAs(t, d, "t1", "abcdef-2")
	submitAs(t, d, "t2", "xyz-1")
	for _, tc := range []struct {
		prefix, tenant string
		want           []db.RunRef
	}{
		{"abc", "", []db.RunRef{{"abc", ""}}}, // an id itself wins over the ids it starts
		{"abcd", "", []db.RunRef{{"abcdef-2", "t1"}, {"abcdef-1", ""}}},
		{"abcd", "t1", []db.RunRef{{"abcdef-2", "t1"}}},
		{"abcdef-1", "t1", []db.RunRef{}},
		{"xyz", "", []db.RunRef{{"xyz-1", "t2"}}},
		{"nothing", "", []db.RunRef{}},
	} {
		got, err := d.ResolveRunIDPrefix(ctx, tc.prefix, tc.tenant)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ResolveRunIDPrefix(%q, %q) = %v, %v; want %v", tc.prefix, tc.tenant, got, err, tc.want)
		}
	}
	if _, err := d.ResolveRunIDPrefix(ctx, "", ""); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("empty prefix: %v", err)
	}
	for i := range db.MaxPrefixMatches + 2 {
		submitAs(t, d, "", "many-"+string(rune('a'+i)))
	}
	if got, err := d.ResolveRunIDPrefix(ctx, "many-", ""); err != nil || len(got) != db.MaxPrefixMatches {
		t.Errorf("a prefix of %d runs: %d, %v", db.MaxPrefixMatches+2, len(got), err)
	}

	for _, tc := range []struct {
		prefixes []string
		tenant   string
		want     int
	}{
		{[]string{"abcd", "xyz-"}, "", 3},
		{[]string{"abcd", "xyz-"}, "t1", 1},
		{[]string{"abc-", "none"}, "", 0},
	} {
		if got, err := d.CountRunsWithIDPrefixes(ctx, tc.prefixes, tc.tenant); err != nil || got != tc.want {
			t.Errorf("CountRunsWithIDPrefixes(%q, %q) = %d, %v; want %d", tc.prefixes, tc.tenant, got, err, tc.want)
		}
	}
	if _, err := d.CountRunsWithIDPrefixes(ctx, []string{"abc", "abcd"}, ""); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("prefixes of two lengths: %v", err)
	}
}

func TestCancelRunResult(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	check := func(res db.CancelResult, err error, want db.CancelResult) {
		t.Helper()
		if err != nil || res != want {
			t.Fatalf("CancelRunResult = %+v, %v; want %+v", res, err, want)
		}
	}
	res, err := d.CancelRunResult(ctx, "later")
	check(res, err, db.CancelResult{Outcome: db.CancelRecorded})
	submit(t, d, "pending")
	res, err = d.CancelRunResult(ctx, "pending")
	check(res, err, db.CancelResult{Outcome: db.CancelDone, Status: run.StatusCancelled})
	res, err = d.CancelRunResult(ctx, "pending")
	check(res, err, db.CancelResult{Outcome: db.CancelDone, Status: run.StatusCancelled})
	submit(t, d, "done")
	if _, err := ex(d).StartRun(ctx, "done", nil); err != nil {
		t.Fatal(err)
	}
	if err := ex(d).FinishRun(ctx, "done", 1, engine.Finish{Status: run.StatusError, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	res, err = d.CancelRunResult(ctx, "done")
	check(res, err, db.CancelResult{Outcome: db.CancelAlreadyFinished, Status: run.StatusError})
	// A tenant's view: another tenant's run reads as no run yet.
	submitAs(t, d, "t1", "theirs")
	t2 := forTenant(t, d, "t2")
	res, err = t2.CancelRunResult(ctx, "theirs")
	check(res, err, db.CancelResult{Outcome: db.CancelRecorded})
	if got, _ := d.GetRun(ctx, "theirs"); got.Status != run.StatusPending {
		t.Fatalf("another tenant's cancel touched the run: %s", got.Status)
	}
}

func TestPromptLimitIsMaxInputBytes(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	big := strings.Repeat("a", run.MaxInputBytes+1)
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "big", AgentName: "a", Input: big}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("submit of %d bytes: %v", len(big), err)
	}
	if _, err := d.PutSchedule(ctx, run.Schedule{Name: "big", AgentName: "a", Cron: "@daily", Prompt: big}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Fatalf("schedule of %d bytes: %v", len(big), err)
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "max", AgentName: "a", Input: big[1:]}); err != nil {
		t.Fatalf("submit of %d bytes: %v", len(big)-1, err)
	}
}
