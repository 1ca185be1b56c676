package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// approvalChaosCalls is what the first turn of a tool run asks for, by the
// run's prompt "t<i>/<kind>": one guarded call (NeedsApproval), two, or
// one guarded and one plain ("record", made at once). Nil for a plain run.
func approvalChaosCalls(prompt string) []fakellm.ToolCall {
	var i, kind int
	if _, err := fmt.Sscanf(prompt, "t%d/%d", &i, &kind); err != nil {
		return nil
	}
	g1 := fakellm.ToolCall{ID: "g1", Name: "guarded", Arguments: `{"path":"a"}`}
	switch kind {
	case 0:
		return []fakellm.ToolCall{g1}
	case 1:
		return []fakellm.ToolCall{g1, {ID: "g2", Name: "guarded", Arguments: `{"path":"b"}`}}
	default:
		return []fakellm.ToolCall{{ID: "p1", Name: "record", Arguments: `{}`}, g1}
	}
}

// approvalChaosAnswer is the model's answer once it read the results.
func approvalChaosAnswer(prompt string, results []string) string {
	return "Answer to " + prompt + ": " + strings.Join(results, " | ")
}

// rejectedChaosText is what the model reads for a rejected call (db's
// rejectedText).
func rejectedChaosText(reason string) string {
	if reason == "" {
		return "rejected: the call was not allowed (no reason was given); do not retry it as is"
	}
	return "rejected: " + reason
}

// chaosAnswerTry is one answer given to a call, and what it returned.
type chaosAnswerTry struct {
	approve bool
	reason  string
	err     error
}

// toolCallRow is one call a tool in a worker process made.
type toolCallRow struct {
	worker string
	at     time.Time
}

func (r toolCallRow) String() string { return r.worker + "@" + r.at.Format("15:04:05.000000") }

// TestChaosApprovals is TestChaosInvariants with approvals: a third of the
// runs are tool runs whose model asks for a NeedsApproval tool (one or two
// calls in one turn, or one with a plain call beside it), while the worker
// processes are killed and replaced and the model fails in scripted ways.
// Answerers — two goroutines on a second db.DB, as another process would
// be, and one on the submitter's — list the waiting runs and answer each
// open call at random, approve or reject (with a reason, or none),
// sometimes twice in a row (a double click) or from both DBs at once; some
// waiting runs they cancel instead, and a quarter of all runs are also
// cancelled at a random moment. After quiescence, for every run:
//
//   - it is terminal, and cancelled if CancelRun answered true; no terminal
//     status was ever seen to change; its log has exactly one terminal
//     event, last, and adds up to its content (checkChaosLog);
//   - it waited at most once (one turn asks for tools); for each guarded
//     call at most one answer stood and every other answer to it was
//     run.ErrNotWaiting; its log has exactly one tool.approved or
//     tool.rejected event for the answer that stood (with its reason) and
//     none without one; a completed run had an answer for every call;
//   - a rejected call, or one never answered, was never made; its tool
//     step in db.Messages is the rejection text;
//   - an approved call was made only after its tool.approved event and
//     before its result was stored, at least once if the run completed,
//     and its result is the tool's output; likewise the plain call, made
//     before the run waited, and not again after;
//   - a completed run's answer is built from exactly those results, in the
//     order asked: the model read what the answers said.
//
// Tool calls are at least once (README, Tools): a worker killed after the
// tool ran but before its result committed leaves the call to be made
// again. So a call may be made more than once, but only when, between two
// of its calls, the run's log shows that the execution that made the first
// was taken from its worker: a rescue (run.retrying, "worker lost …") or a
// hand-back (run.released). Any other second call fails the test. Times
// compared are all Postgres's clock (the tool rows' clock_timestamp(), the
// events' and steps' now()), so the order is exact.
func TestChaosApprovals(t *testing.T) {
	t.Parallel()
	runs := 1200
	if testing.Short() {
		runs = 150
	}
	const rescueAfter = 1500 * time.Millisecond
	const prefix = "chaosa-"
	dbURL := kerntest.DatabaseURL(t)
	fake, modelURL := kerntest.ModelServer(t)
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		prompt := req.LastUserMessage()
		calls := approvalChaosCalls(prompt)
		switch {
		case calls == nil:
			return chaosFault(fakellm.Reply{Content: chaosAnswer(prompt)})
		case toolMessages(req) == 0:
			return chaosFault(fakellm.Reply{Content: "Asking. ", ToolCalls: calls})
		}
		var results []string
		for _, m := range req.Messages {
			if m.Role == "tool" {
				results = append(results, m.Content)
			}
		}
		return chaosFault(fakellm.Reply{Content: approvalChaosAnswer(prompt, results)})
	})
	submitter := submitterOn(t, dbURL)
	answerDB := kerntest.Open(t, dbURL) // the answerers' "other process"
	ctx := kerntest.Context(t, 3*time.Minute)
	createToolCallsTable(t, submitter)

	fleet := startChaosFleet(t, dbURL, modelURL, rescueAfter, workerToolsEnv+"=1")
	observer := observeTerminal(ctx, submitter.DB)

	cancelled := make([]atomic.Bool, runs)
	var bookMu sync.Mutex
	book := map[string][]chaosAnswerTry{} // "<run id>/<call id>" → the answers given
	var doubleClicks, pairs, waitCancels, reasons atomic.Int64
	answer := func(d *db.DB, runID, callID string) {
		try := chaosAnswerTry{approve: rand.IntN(100) < 55}
		if try.approve {
			try.err = d.ApproveToolCall(ctx, runID, callID)
		} else {
			if rand.IntN(100) < 85 {
				try.reason = fmt.Sprintf("no, %s/%s #%d", runID, callID, reasons.Add(1))
			}
			try.err = d.RejectToolCall(ctx, runID, callID, try.reason)
		}
		if try.err != nil && !errors.Is(try.err, run.ErrNotWaiting) {
			t.Errorf("answer to %s/%s: %v", runID, callID, try.err)
		}
		bookMu.Lock()
		book[runID+"/"+callID] = append(book[runID+"/"+callID], try)
		bookMu.Unlock()
	}
	dbs := [2]*db.DB{answerDB, submitter.DB}
	visit := func(d *db.DB, w *run.Output) {
		var i int
		if _, err := fmt.Sscanf(w.RunID, prefix+"%d", &i); err != nil {
			t.Errorf("waiting run %q is not one of the test's", w.RunID)
			return
		}
		if rand.IntN(100) < 6 {
			ok, err := d.CancelRun(ctx, w.RunID)
			if err != nil {
				t.Errorf("cancel waiting %s: %v", w.RunID, err)
			}
			if ok {
				cancelled[i].Store(true)
				waitCancels.Add(1)
			}
			return
		}
		for _, c := range w.Waiting {
			switch n := rand.IntN(100); {
			case n < 15: // a double click
				doubleClicks.Add(1)
				answer(d, w.RunID, c.ID)
				answer(d, w.RunID, c.ID)
			case n < 30: // two answerers at once, from both DBs
				pairs.Add(1)
				var pair sync.WaitGroup
				start := make(chan struct{})
				for _, d := range dbs {
					pair.Go(func() { <-start; answer(d, w.RunID, c.ID) })
				}
				close(start)
				pair.Wait()
			default:
				answer(d, w.RunID, c.ID)
			}
		}
	}
	stopAnswering := make(chan struct{})
	var answerers sync.WaitGroup
	for _, d := range []*db.DB{answerDB, answerDB, submitter.DB} {
		answerers.Go(func() {
			for {
				select {
				case <-stopAnswering:
					return
				case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
				}
				cursor := ""
				for {
					list, err := d.ListRuns(ctx, run.ListParams{Statuses: []run.Status{run.StatusWaiting}, Limit: 100, Cursor: cursor})
					if err != nil {
						t.Errorf("list waiting runs: %v", err)
						return
					}
					for _, j := range rand.Perm(len(list.Runs)) {
						if rand.IntN(100) < 30 {
							continue // it waits on, maybe through a kill or two
						}
						visit(d, list.Runs[j])
					}
					if cursor = list.NextCursor; cursor == "" {
						break
					}
				}
			}
		})
	}

	// Submitters: every third run is a tool run; a quarter of all runs are
	// cancelled at a random moment.
	prompt := func(i int) string {
		if i%3 == 1 {
			return fmt.Sprintf("t%d/%d", i, (i/3)%3)
		}
		return fmt.Sprintf("q%d", i)
	}
	var next atomic.Int64
	var wg, cancels sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= runs {
					return
				}
				id := fmt.Sprintf(prefix+"%04d", i)
				if _, err := submitter.Run(ctx, prompt(i), agent.Background(true), agent.WithRunID(id)); err != nil {
					t.Errorf("submit %s: %v", id, err)
					return
				}
				if i%4 == 0 {
					cancels.Go(func() {
						time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
						ok, err := submitter.CancelRun(ctx, id)
						if err != nil {
							t.Errorf("cancel %s: %v", id, err)
						}
						if ok {
							cancelled[i].Store(true)
						}
					})
				}
			}
		})
	}
	wg.Wait()
	cancels.Wait()

	waitQuiescent(ctx, t, submitter.DB, 2*time.Minute)
	close(stopAnswering)
	answerers.Wait()
	fleet.halt()
	changed := observer.finish()

	calls := map[string][]toolCallRow{}
	rows, err := submitter.DB.Pool().Query(ctx, `SELECT call_id, worker, at FROM test_tool_calls ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var r toolCallRow
		if err := rows.Scan(&id, &r.worker, &r.at); err != nil {
			t.Fatal(err)
		}
		calls[id] = append(calls[id], r)
	}
	rows.Close()

	counts, toolCounts := map[run.Status]int{}, map[run.Status]int{}
	var approvals, rejections, notWaiting, again int
	for i := range runs {
		id := fmt.Sprintf(prefix+"%04d", i)
		out, err := submitter.GetRunOutput(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		counts[out.Status]++
		switch {
		case !out.Status.Terminal():
			t.Errorf("%s is %s after quiescence", id, out.Status)
		case cancelled[i].Load() && out.Status != run.StatusCancelled:
			t.Errorf("%s: CancelRun answered true, the run ended %s (%s)", id, out.Status, out.Error)
		}
		events := collect(t, submitter, id, 0)
		checkChaosLog(t, events, out)
		asked := approvalChaosCalls(prompt(i))
		if asked == nil {
			if out.Status == run.StatusCompleted && out.Content != chaosAnswer(prompt(i)) {
				t.Errorf("%s: completed with %q", id, out.Content)
			}
			continue
		}
		toolCounts[out.Status]++
		msgs, err := submitter.DB.Messages(ctx, id)
		if err != nil {
			t.Fatalf("%s: messages: %v", id, err)
		}
		results := map[string]*run.Message{}
		for _, m := range msgs {
			if m.Role == "tool" {
				if results[m.ToolCallID] != nil {
					t.Errorf("%s: two results for call %s", id, m.ToolCallID)
				}
				results[m.ToolCallID] = &m
			}
		}
		var waitedAt time.Time
		var waits int
		answered := map[string][]run.Event{}
		var takenAway []time.Time // rescues and hand-backs
		for _, ev := range events {
			var data struct{ ID, Reason, Error string }
			_ = json.Unmarshal(ev.Data, &data)
			switch ev.Type {
			case run.EventRunWaiting:
				waits++
				waitedAt = ev.At
			case run.EventToolApproved, run.EventToolRejected:
				answered[data.ID] = append(answered[data.ID], ev)
			case run.EventRunReleased:
				takenAway = append(takenAway, ev.At)
			case run.EventRunRetrying:
				if strings.HasPrefix(data.Error, "worker lost") {
					takenAway = append(takenAway, ev.At)
				}
			}
		}
		if waits > 1 {
			t.Errorf("%s: waited %d times; one turn asked for tools", id, waits)
		}
		// checkMade: the calls of key made between after and the result's
		// storing, again only after the execution was taken away.
		checkMade := func(key string, after time.Time, result *run.Message) {
			made := calls[key]
			delete(calls, key)
			for k, c := range made {
				if !c.at.After(after) {
					t.Errorf("%s: made at %v by %s, before %v (its approval, or the run's start)", key, c.at, c.worker, after)
				}
				if result != nil && !c.at.Before(result.At) {
					t.Errorf("%s: made at %v by %s, after its result was stored (%v)", key, c.at, c.worker, result.At)
				}
				if k == 0 {
					continue
				}
				again++
				legit := false
				for _, at := range takenAway {
					legit = legit || (at.After(made[k-1].at) && at.Before(c.at))
				}
				if !legit {
					t.Errorf("%s: made %d times (%+v) with no rescue or hand-back between (%v)", key, len(made), made, takenAway)
				}
			}
			if out.Status == run.StatusCompleted && len(made) == 0 {
				t.Errorf("%s: the run completed, the call was never made", key)
			}
		}
		var want []string
		for _, c := range asked {
			key := id + "/" + c.ID
			result := results[c.ID]
			if c.Name == "record" {
				if waits > 0 && len(calls[key]) == 0 {
					t.Errorf("%s: the run waited before its plain call was made", key)
				}
				for _, m := range calls[key] {
					if waits > 0 && !m.at.Before(waitedAt) {
						t.Errorf("%s: made at %v by %s, after the run waited (%v)", key, m.at, m.worker, waitedAt)
					}
				}
				checkMade(key, time.Time{}, result)
				if result != nil && result.Content != "recorded" {
					t.Errorf("%s: result %q", key, result.Content)
				}
				want = append(want, "recorded")
				continue
			}
			var stood []chaosAnswerTry
			for _, try := range book[key] {
				if try.err == nil {
					stood = append(stood, try)
				} else {
					notWaiting++
				}
			}
			evs := answered[c.ID]
			if len(stood) == 0 {
				if len(evs) > 0 || len(calls[key]) > 0 || result != nil || out.Status == run.StatusCompleted {
					t.Errorf("%s: no answer stood, yet %d answer events, %d calls, result %v, run %s",
						key, len(evs), len(calls[key]), result, out.Status)
				}
				delete(calls, key)
				continue
			}
			s := stood[0]
			wantType := map[bool]run.EventType{true: run.EventToolApproved, false: run.EventToolRejected}[s.approve]
			var evReason struct{ Reason string }
			if len(evs) == 1 {
				_ = json.Unmarshal(evs[0].Data, &evReason)
			}
			switch {
			case len(stood) > 1:
				t.Errorf("%s: %d answers stood: %+v", key, len(stood), stood)
			case waits == 0:
				t.Errorf("%s: an answer stood, yet the run never waited", key)
			case len(evs) != 1 || evs[0].Type != wantType || evReason.Reason != s.reason:
				t.Errorf("%s: answer %+v stood, the log has %d answer events: %+v", key, s, len(evs), evs)
			}
			if !s.approve {
				rejections++
				if made := calls[key]; len(made) > 0 {
					t.Errorf("%s: rejected, yet made %d times: %+v", key, len(made), made)
				}
				delete(calls, key)
				text := rejectedChaosText(s.reason)
				if result == nil || result.Content != text {
					t.Errorf("%s: rejected (%q), its result is %+v", key, s.reason, result)
				}
				want = append(want, text)
				continue
			}
			approvals++
			if len(evs) > 0 {
				checkMade(key, evs[0].At, result)
			}
			delete(calls, key)
			if (result == nil && out.Status == run.StatusCompleted) || (result != nil && result.Content != "done "+key) {
				t.Errorf("%s: approved, its result is %+v (run %s)", key, result, out.Status)
			}
			want = append(want, "done "+key)
		}
		if out.Status == run.StatusCompleted && out.Content != approvalChaosAnswer(prompt(i), want) {
			t.Errorf("%s: completed with %q, want %q", id, out.Content, approvalChaosAnswer(prompt(i), want))
		}
	}
	for key, made := range calls {
		t.Errorf("%s: made %d times, not a call any run asked for", key, len(made))
	}
	if len(changed) > 0 {
		t.Errorf("terminal statuses changed: %v", changed)
	}
	t.Logf("%d runs: %v; tool runs %v; %d approvals and %d rejections stood, %d answers ErrNotWaiting "+
		"(%d double clicks, %d concurrent pairs), %d waiting runs cancelled; %d tool calls made again after a rescue or hand-back; "+
		"%d worker kills, %d graceful stops, %d model requests",
		runs, counts, toolCounts, approvals, rejections, notWaiting, doubleClicks.Load(), pairs.Load(), waitCancels.Load(), again,
		fleet.kills.Load(), fleet.terms.Load(), fake.Count())
	if fleet.kills.Load() == 0 || approvals == 0 || rejections == 0 || notWaiting == 0 || toolCounts[run.StatusCompleted] == 0 {
		t.Fatalf("the chaos did not exercise enough: %v, %d kills, %d approvals, %d rejections, %d ErrNotWaiting",
			toolCounts, fleet.kills.Load(), approvals, rejections, notWaiting)
	}
}
