package db_test

import (
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestOutboxCompleteOnEveryTerminalPath: the trigger writes one completion
// row (and one webhook row for a run with a webhook URL) per run, whatever
// ended it: a finish, a cancel of a pending or a running run, a cancel
// before submit, a rescue that gave up; and nothing for non-terminal
// changes or for a run that stays terminal. The drain turns the rows into
// River jobs and deletes them, in one transaction.
func TestOutboxCompleteOnEveryTerminalPath(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	e := ex(d)

	submit(t, d, "finished")
	submit(t, d, "failed")
	for _, id := range []string{"finished", "failed"} {
		c, err := d.Engine(engine.Key{}).StartRun(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.AppendContent(ctx, id, c.Fence.Execution, "partial"); err != nil {
			t.Fatal(err)
		}
		if err := e.Heartbeat(ctx, id, c.Fence.Execution); err != nil {
			t.Fatal(err)
		}
		st := run.StatusCompleted
		if id == "failed" {
			st = run.StatusError
		}
		if err := e.FinishRun(ctx, id, c.Fence.Execution, engine.Finish{Status: st, Error: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	submit(t, d, "cancelled pending")
	submit(t, d, "cancelled running")
	if _, err := e.StartRun(ctx, "cancelled running", nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"cancelled pending", "cancelled running", "early"} {
		if ok, err := d.CancelRun(ctx, id); err != nil || !ok {
			t.Fatalf("cancel %s: %v %v", id, ok, err)
		}
	}
	submit(t, d, "early")
	if _, err := e.StartRun(ctx, "early", nil); err != nil { // straight to cancelled
		t.Fatal(err)
	}
	submit(t, d, "spent")
	if _, err := e.StartRun(ctx, "spent", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run SET heartbeat_at = now() - interval '1 minute', attempt = 3,
		webhook_url = 'http://127.0.0.1:1/hook' WHERE id = 'spent'`); err != nil {
		t.Fatal(err)
	}
	if res, err := e.RescueStale(ctx, 30*time.Second, 3); err != nil || len(res.Failed) != 1 {
		t.Fatalf("rescue: %+v %v", res, err)
	}
	submit(t, d, "still pending")
	// A terminal run cancelled again changes nothing.
	if ok, err := d.CancelRun(ctx, "finished"); err != nil || ok {
		t.Fatalf("cancel finished: %v %v", ok, err)
	}

	rows, err := d.Pool().Query(ctx, `SELECT run_id, kind FROM kern_run_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for rows.Next() {
		var id, kind string
		if err := rows.Scan(&id, &kind); err != nil {
			t.Fatal(err)
		}
		got[id] = append(got[id], kind)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"finished": 1, "failed": 1, "cancelled pending": 1, "cancelled running": 1, "early": 1, "spent": 2}
	for id, n := range want {
		if len(got[id]) != n || got[id][0] != "complete" {
			t.Errorf("%s: outbox %v, want %d rows, completion first", id, got[id], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("outbox %v", got)
	}
	if out, _ := d.GetRun(ctx, "spent"); out.Webhook == nil || out.Webhook.Status != "pending" || out.Webhook.Attempts != 0 {
		t.Errorf("spent run's webhook: %+v", out.Webhook)
	}
	if out, _ := d.GetRun(ctx, "finished"); out.Webhook != nil {
		t.Errorf("a run without webhook reads with %+v", out.Webhook)
	}

	// A drainer without OnComplete takes the webhook only; the
	// completions stay for one that has it.
	res, err := d.Engine(engine.Key{}).DrainOutbox(ctx, engine.OutboxDrain{Agents: []string{"a"}, DropAfter: time.Hour})
	if err != nil || res != (engine.OutboxResult{Webhooks: 1}) {
		t.Fatalf("drain without OnComplete: %+v %v", res, err)
	}
	res, err = d.Engine(engine.Key{}).DrainOutbox(ctx, engine.OutboxDrain{Agents: []string{"other"}, Complete: true})
	if err != nil || res != (engine.OutboxResult{}) {
		t.Fatalf("drain of another agent: %+v %v", res, err)
	}
	res, err = d.Engine(engine.Key{}).DrainOutbox(ctx, engine.OutboxDrain{Agents: []string{"a"}, Complete: true, Limit: 4})
	if err != nil || res != (engine.OutboxResult{Completions: 4}) {
		t.Fatalf("first drain: %+v %v", res, err)
	}
	res, err = d.Engine(engine.Key{}).DrainOutbox(ctx, engine.OutboxDrain{Agents: []string{"a"}, Complete: true})
	if err != nil || res != (engine.OutboxResult{Completions: 2}) {
		t.Fatalf("second drain: %+v %v", res, err)
	}
	var jobs map[string]int
	jobs = map[string]int{}
	jrows, err := d.Pool().Query(ctx, `SELECT kind, queue, count(*) FROM river_job WHERE kind <> 'kern_run' GROUP BY kind, queue`)
	if err != nil {
		t.Fatal(err)
	}
	for jrows.Next() {
		var kind, queue string
		var n int
		if err := jrows.Scan(&kind, &queue, &n); err != nil {
			t.Fatal(err)
		}
		jobs[kind+" "+queue] = n
	}
	if jobs["kern_complete "+engine.CompleteQueueFor("a")] != 6 || jobs["kern_webhook "+engine.WebhookQueueFor("a")] != 1 || len(jobs) != 2 {
		t.Fatalf("jobs %v", jobs)
	}
	var left int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run_outbox`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("outbox rows left: %d %v", left, err)
	}
}

// TestOutboxCompleteDroppedWithoutOnComplete: completion rows nobody with
// an OnComplete took are deleted by the others after DropAfter.
func TestOutboxCompleteDroppedWithoutOnComplete(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 30*time.Second)
	submit(t, d, "r")
	if _, err := d.CancelRun(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	p := engine.OutboxDrain{Agents: []string{"a"}, DropAfter: time.Minute}
	if res, err := d.Engine(engine.Key{}).DrainOutbox(ctx, p); err != nil || res != (engine.OutboxResult{}) {
		t.Fatalf("fresh: %+v %v", res, err)
	}
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_run_outbox SET created_at = now() - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	if res, err := d.Engine(engine.Key{}).DrainOutbox(ctx, p); err != nil || res != (engine.OutboxResult{Dropped: 1}) {
		t.Fatalf("old: %+v %v", res, err)
	}
}

// TestMarshalRunCompleteShape: the JSON of a run has the API's fields.
func TestMarshalRunCompleteShape(t *testing.T) {
	t.Parallel()
	fin := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	b, err := db.MarshalRun(&run.Output{RunID: "r", AgentName: "a", Status: run.StatusCompleted, Content: "hi",
		Metrics: run.Metrics{TimeToFirstToken: 1500 * time.Microsecond, Duration: 2 * time.Second}, FinishedAt: &fin})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"run_id":"r","session_id":"","parent_run_id":"","agent":"a","name":"","status":"completed","input":"","content":"hi","error":"",` +
		`"metadata":{},"metrics":{"input_tokens":0,"output_tokens":0,"total_tokens":0,"time_to_first_token_ms":1,` +
		`"duration_ms":2000,"model_turns":0,"tool_calls":0},"attempt":0,"waiting":[],"created_at":"0001-01-01T00:00:00Z",` +
		`"started_at":null,"finished_at":"2026-01-02T02:04:05Z"}`
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
}
