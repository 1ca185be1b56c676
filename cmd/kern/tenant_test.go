package main

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestRunsTenant: runs and schedules made with --tenant are the tenant's
// (its view sees them), list shows and filters by tenant, and get, wait,
// cancel and events read a tenant's run with --tenant.
func TestRunsTenant(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	acme, err := e.db.ForTenant("acme")
	if err != nil {
		t.Fatal(err)
	}

	out := kern(t, ctx, e.url, "runs", "submit", "--tenant", "acme", "--agent", "idle", "--json", "for acme")
	var sub struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(out), &sub); err != nil {
		t.Fatal(err)
	}
	if got, err := acme.GetRun(ctx, sub.RunID); err != nil || got.TenantID != "acme" {
		t.Fatalf("the tenant's view of the submitted run: %+v, %v", got, err)
	}
	// --wait through the tenant's view.
	r := kernExec(t, ctx, e.url, "", "runs", "submit", "--tenant", "acme", "--wait", "--json", "hello")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "completed"`) {
		t.Fatalf("submit --tenant --wait: %+v", r)
	}
	mine, err := e.idle.Run(ctx, "the operator's", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}

	// list: a TENANT column; --tenant keeps the tenant's runs.
	table := kern(t, ctx, e.url, "runs", "list", "--agent", "idle")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || strings.Fields(lines[0])[1] != "TENANT" ||
		strings.Fields(lines[1])[1] != "-" || strings.Fields(lines[2])[1] != "acme" {
		t.Fatalf("list printed\n%s", table)
	}
	if ids := e.listIDs(t, ctx, kern(t, ctx, e.url, "runs", "list", "--tenant", "acme", "--agent", "idle", "--json")); !reflect.DeepEqual(ids, []string{sub.RunID}) {
		t.Fatalf("list --tenant acme: %v", ids)
	}
	if ids := e.listIDs(t, ctx, kern(t, ctx, e.url, "runs", "list", "--tenant", "other", "--json")); len(ids) != 0 {
		t.Fatalf("list --tenant other: %v", ids)
	}

	// get, events, wait, cancel with --tenant: the tenant's run; another
	// tenant's view does not find it.
	if g := kern(t, ctx, e.url, "runs", "get", "--tenant", "acme", sub.RunID); !strings.Contains(g, "input:    for acme") {
		t.Fatalf("get --tenant printed\n%s", g)
	}
	for _, args := range [][]string{
		{"runs", "get", "--tenant", "other", sub.RunID},
		{"runs", "events", "--tenant", "other", sub.RunID},
		{"runs", "wait", "--tenant", "other", sub.RunID},
		{"runs", "get", "--tenant", "acme", mine.RunID},
	} {
		if r := kernExec(t, ctx, e.url, "", args...); r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("kern %v: %+v, want exit 1 saying not found", args, r)
		}
	}
	if ev := kern(t, ctx, e.url, "runs", "events", "--tenant", "acme", sub.RunID); ev != "" {
		t.Fatalf("events of a pending run printed %q", ev)
	}
	// Another tenant's cancel does not touch it; the tenant's does.
	if c := kern(t, ctx, e.url, "runs", "cancel", "--tenant", "other", sub.RunID); c != "no such run yet: cancel recorded\n" {
		t.Fatalf("cancel --tenant other printed %q", c)
	}
	if got, _ := e.db.GetRun(ctx, sub.RunID); got.Status != run.StatusPending {
		t.Fatalf("another tenant's cancel: run is %s", got.Status)
	}
	if c := kern(t, ctx, e.url, "runs", "cancel", "--tenant", "acme", sub.RunID); c != "cancelled\n" {
		t.Fatalf("cancel --tenant acme printed %q", c)
	}
	if r := kernExec(t, ctx, e.url, "", "runs", "wait", "--tenant", "acme", sub.RunID); r.code != 2 {
		t.Fatalf("wait --tenant on the cancelled run: %+v", r)
	}

	// schedules: put --tenant makes the tenant's schedule; list and delete
	// --tenant see only the tenant's.
	kern(t, ctx, e.url, "schedules", "put", "--tenant", "acme", "daily", "--cron", "@daily", "Report.")
	if list, err := acme.ListSchedules(ctx); err != nil || len(list) != 1 || list[0].Name != "daily" || list[0].TenantID != "acme" {
		t.Fatalf("the tenant's schedules: %+v, %v", list, err)
	}
	kern(t, ctx, e.url, "schedules", "put", "own", "--cron", "@daily", "Mine.")
	if l := kern(t, ctx, e.url, "schedules", "list"); !strings.HasPrefix(l, "TENANT ") || !strings.Contains(l, "\nacme ") || !strings.Contains(l, "\n-  ") {
		t.Fatalf("schedules list (every tenant's) printed\n%s", l)
	}
	if l := kern(t, ctx, e.url, "schedules", "list", "--tenant", "acme"); !strings.HasPrefix(l, "NAME ") || !strings.Contains(l, "\ndaily ") || strings.Contains(l, "own") {
		t.Fatalf("schedules list --tenant printed\n%s", l)
	}
	if r := kernExec(t, ctx, e.url, "", "schedules", "delete", "daily"); r.code != 1 {
		t.Fatalf("delete of the tenant's schedule without --tenant: %+v", r)
	}
	if d := kern(t, ctx, e.url, "schedules", "delete", "--tenant", "acme", "daily"); d != "deleted\n" {
		t.Fatalf("delete --tenant printed %q", d)
	}
	if r := kernExec(t, ctx, e.url, "", "runs", "submit", "--tenant", strings.Repeat("x", 300), "x"); r.code != 1 || !strings.Contains(r.stderr, "tenant") {
		t.Fatalf("submit with a tenant id too long: %+v", r)
	}
}

// TestRunsIDPrefix: get, wait, cancel and events take any unique prefix of
// a run id, say which runs an ambiguous one names, and list prints short
// ids that name one run of the table, not only of the listing.
func TestRunsIDPrefix(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	submit := func(a *agent.Agent, id, tenant string) {
		t.Helper()
		if _, err := a.Run(ctx, "prompt of "+id, agent.Background(true), agent.WithRunID(id), agent.WithTenant(tenant)); err != nil {
			t.Fatal(err)
		}
	}
	submit(e.idle, "aaaaaaaa-1111-0000", "")
	submit(e.idle, "aaaaaaaa-1122-0000", "")
	submit(e.idle, "cccccccc-1111-0000", "t1")
	submit(e.idle, "cccccccc-2222-0000", "t2")
	other := &agent.Agent{Name: "other", Model: e.idle.Model, DB: e.db}
	submit(other, "bbbbbbbb-0001-0000", "")
	submit(e.idle, "bbbbbbbb-0002-0000", "")

	// A unique prefix names its run.
	if g := kern(t, ctx, e.url, "runs", "get", "aaaaaaaa-11"+"1"); !strings.Contains(g, "id:       aaaaaaaa-1111-0000\n") {
		t.Fatalf("get by prefix printed\n%s", g)
	}
	if r := kernExec(t, ctx, e.url, "", "runs", "wait", "--timeout", "1ms", "--json", "aaaaaaaa-112"); r.code != 3 || !strings.Contains(r.stdout, `"run_id": "aaaaaaaa-1122-0000"`) {
		t.Fatalf("wait by prefix: %+v", r)
	}
	if ev := kernExec(t, ctx, e.url, "", "runs", "events", "aaaaaaaa-112"); ev.code != 0 {
		t.Fatalf("events by prefix: %+v", ev)
	}
	// An ambiguous one is refused, with the candidates.
	for _, args := range [][]string{
		{"runs", "get", "aaaaaaaa"},
		{"runs", "wait", "aaaaaaaa-1"},
		{"runs", "events", "aaaaaaaa"},
		{"runs", "cancel", "aaaaaaaa"},
	} {
		r := kernExec(t, ctx, e.url, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "ambiguous") || !strings.Contains(r.stderr, "\n  aaaaaaaa-1111-0000") ||
			!strings.Contains(r.stderr, "\n  aaaaaaaa-1122-0000") || r.stdout != "" {
			t.Errorf("kern %v: %+v, want exit 1 naming both runs", args, r)
		}
	}
	// Across tenants without --tenant (they are named); within one with it.
	r := kernExec(t, ctx, e.url, "", "runs", "get", "cccccccc")
	if r.code != 1 || !strings.Contains(r.stderr, "cccccccc-1111-0000 (tenant t1)") || !strings.Contains(r.stderr, "cccccccc-2222-0000 (tenant t2)") {
		t.Fatalf("get of a prefix two tenants' runs share: %+v", r)
	}
	if g := kern(t, ctx, e.url, "runs", "get", "--tenant", "t2", "cccccccc"); !strings.Contains(g, "id:       cccccccc-2222-0000\n") {
		t.Fatalf("get --tenant t2 by prefix printed\n%s", g)
	}
	// cancel by prefix cancels that run.
	if c := kern(t, ctx, e.url, "runs", "cancel", "aaaaaaaa-111"); c != "cancelled\n" {
		t.Fatalf("cancel by prefix printed %q", c)
	}
	if got, _ := e.db.GetRun(ctx, "aaaaaaaa-1111-0000"); got.Status != run.StatusCancelled {
		t.Fatalf("cancelled by prefix: %s", got.Status)
	}

	// list's short ids name one run each in the table: agent idle's
	// bbbbbbbb-0002 shares 8 characters with agent other's run.
	table := kern(t, ctx, e.url, "runs", "list", "--agent", "idle")
	var shorts []string
	for _, l := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		shorts = append(shorts, strings.Fields(l)[0])
	}
	if len(shorts) != 5 {
		t.Fatalf("list printed\n%s", table)
	}
	for _, s := range shorts {
		refs, err := e.db.ResolveRunIDPrefix(ctx, s, "")
		if err != nil || len(refs) != 1 {
			t.Errorf("short id %q names %v (%v), want one run\n%s", s, refs, err, table)
		}
	}
	if !slices.ContainsFunc(shorts, func(s string) bool { return strings.HasPrefix("bbbbbbbb-0002-0000", s) }) {
		t.Fatalf("list printed\n%s", table)
	}
	// Within a tenant's list, 8 characters are enough.
	if l := kern(t, ctx, e.url, "runs", "list", "--tenant", "t1"); !strings.Contains(l, "\ncccccccc ") {
		t.Fatalf("list --tenant t1 printed\n%s", l)
	}
}

// TestRunsCancelSaysWhatHappened: cancel tells an unknown id, a cancelled
// run and a finished one apart.
func TestRunsCancelSaysWhatHappened(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	unknown := "01970c6e-8f5e-7b3a-9c1d-2e4f6a8b0c1d"
	if c := kern(t, ctx, e.url, "runs", "cancel", unknown); c != "no such run yet: cancel recorded\n" {
		t.Fatalf("cancel of an unknown id printed %q", c)
	}
	// The request waits for the run: submitted now, it ends cancelled.
	if _, err := e.agent.Run(ctx, "late", agent.Background(true), agent.WithRunID(unknown)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.db.WaitRun(ctx, unknown); err != nil || got.Status != run.StatusCancelled {
		t.Fatalf("the run of a recorded cancel: %+v, %v", got, err)
	}
	if c := kern(t, ctx, e.url, "runs", "cancel", unknown); c != "cancelled\n" {
		t.Fatalf("cancel of a cancelled run printed %q", c)
	}
	done, err := e.agent.Run(ctx, "hi")
	if err != nil || done.Status != run.StatusCompleted {
		t.Fatalf("run: %+v, %v", done, err)
	}
	if r := kernExec(t, ctx, e.url, "", "runs", "cancel", done.RunID); r.code != 1 || r.stdout != "already finished: completed\n" {
		t.Fatalf("cancel of a completed run: %+v", r)
	}
}

// TestRunsPromptTooLarge: the CLI refuses a prompt over run.MaxInputBytes
// (as the API does), says so, and writes nothing.
func TestRunsPromptTooLarge(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	big := strings.Repeat("a", run.MaxInputBytes+1)
	r := kernExec(t, ctx, e.url, big, "runs", "submit", "--agent", "idle", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "more than 1048576 bytes (1 MiB)") || r.stdout != "" {
		t.Fatalf("submit of %d bytes: exit %d, stderr %q", len(big), r.code, r.stderr)
	}
	if page, err := e.db.ListRuns(ctx, run.ListParams{}); err != nil || len(page.Runs) != 0 {
		t.Fatalf("runs after the refused submit: %v, %v", page, err)
	}
	// The limit itself is accepted.
	r = kernExec(t, ctx, e.url, big[1:], "runs", "submit", "--agent", "idle", "--json", "-")
	if r.code != 0 {
		t.Fatalf("submit of %d bytes: exit %d, stderr %q", len(big)-1, r.code, r.stderr)
	}
}

// TestRunsListIsASummary: list --json carries no content (as its help
// says, like its table); get carries it whole.
func TestRunsListIsASummary(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	e := newEnv(t)
	done, err := e.agent.Run(ctx, "hi")
	if err != nil || done.Content == "" {
		t.Fatalf("run: %+v, %v", done, err)
	}
	js := kern(t, ctx, e.url, "runs", "list", "--json")
	if ids := e.listIDs(t, ctx, js); !reflect.DeepEqual(ids, []string{done.RunID}) || strings.Contains(js, done.Content) {
		t.Fatalf("list --json printed\n%s", js)
	}
	if g := kern(t, ctx, e.url, "runs", "get", "--json", done.RunID); !strings.Contains(g, `"content": `) {
		t.Fatalf("get --json printed\n%s", g)
	}
}

// TestSchedulesJSONIsTheAPIs: the CLI's schedule JSON has the fields of
// the HTTP API's Schedule (server/openapi.json).
func TestSchedulesJSONIsTheAPIs(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../server/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var want []string
	for p := range doc.Components.Schemas["Schedule"].Properties {
		want = append(want, p)
	}
	var got []string
	typ := reflect.TypeOf(scheduleJSON{})
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		got = append(got, name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("the CLI's schedule JSON has %v, the API's %v", got, want)
	}
}
