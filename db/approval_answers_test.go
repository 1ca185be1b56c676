package db_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// The answers tests' run waits on three calls: c1's tool NeedsApproval;
// c2's is External; c3's is External too, but its first wait does not say
// so (stored by a kern that did not tell External calls apart, or by a
// worker on which the tool was not External yet). Calls approved while
// their tool is External are waited on again by the worker that resumes
// the run, as the agent's loop does.
var answerCalls = []struct {
	id       string
	seq      int
	external bool // what the tool is
	flagged  bool // what the first wait says
}{{"c1", 3, false, false}, {"c2", 4, true, true}, {"c3", 5, true, false}}

// answerRun is the model of one run's answers: which calls are open, which
// were approved, which have their tool step (a result or a rejection).
type answerRun struct {
	t         *testing.T
	d         *db.DB
	id        string
	execution int
	flagged   map[string]bool // what the current wait says of each open call
	approved  map[string]bool
	stepped   map[string]bool
}

func newAnswerRun(t *testing.T, d *db.DB, id string) *answerRun {
	t.Helper()
	ctx := kerntest.Context(t, 10*time.Second)
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "a", Input: "answer me"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ex(d).StartRun(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	r := &answerRun{t: t, d: d, id: id, execution: 1, approved: map[string]bool{}, stepped: map[string]bool{}}
	var calls []engine.WaitCall
	for _, c := range answerCalls {
		calls = append(calls, engine.WaitCall{Seq: c.seq, Call: run.ToolCall{ID: c.id, Name: "tool_" + c.id, Arguments: `{}`}, External: c.flagged})
	}
	r.wait(calls)
	return r
}

// wait moves the running run to waiting on calls, as a worker does.
func (r *answerRun) wait(calls []engine.WaitCall) {
	r.t.Helper()
	ctx := kerntest.Context(r.t, 10*time.Second)
	seq, err := ex(r.d).lastSeq(ctx, r.id)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.d.Engine(engine.Key{}).WaitForAnswers(ctx, engine.Fence{RunID: r.id, Execution: r.execution}, seq+1, calls); err != nil {
		r.t.Fatalf("wait for answers: %v", err)
	}
	r.flagged = map[string]bool{}
	for _, c := range calls {
		r.flagged[c.Call.ID] = c.External
	}
}

// expect is what the model says an answer does: nil, run.ErrNotWaiting
// or run.ErrInvalidArgument.
func (r *answerRun) expect(kind, call string) error {
	open, ok := r.flagged[call]
	switch {
	case !ok:
		return run.ErrNotWaiting
	case kind == "approve" && (open || r.approved[call]):
		return run.ErrInvalidArgument
	}
	return nil
}

// apply records an answer that stood.
func (r *answerRun) apply(kind, call string) {
	delete(r.flagged, call)
	if kind == "approve" {
		r.approved[call] = true
	} else {
		r.stepped[call] = true
	}
}

func (r *answerRun) answer(kind, call string) error {
	ctx := kerntest.Context(r.t, 10*time.Second)
	switch kind {
	case "approve":
		return r.d.ApproveToolCall(ctx, r.id, call)
	case "reject":
		return r.d.RejectToolCall(ctx, r.id, call, "no")
	}
	return r.d.SubmitToolResult(ctx, r.id, call, "out of "+call)
}

// resume, once every open call is answered, starts the pending run with
// its job, as a worker does, and waits again on the approved calls of
// External tools that have no result; with none it finishes the run. It
// reports whether the run finished.
func (r *answerRun) resume() bool {
	r.t.Helper()
	ctx := kerntest.Context(r.t, 10*time.Second)
	var jobID *int64
	if err := r.d.Pool().QueryRow(ctx, `SELECT job_id FROM kern_run WHERE id = $1`, r.id).Scan(&jobID); err != nil || jobID == nil {
		r.t.Fatalf("the answered run has no job (%v)", err)
	}
	out, err := ex(r.d).StartRun(ctx, r.id, jobID)
	if err != nil || out.Status != run.StatusRunning {
		r.t.Fatalf("resume: %+v, %v", out, err)
	}
	r.execution++
	var again []engine.WaitCall
	for _, c := range answerCalls {
		if c.external && r.approved[c.id] && !r.stepped[c.id] {
			again = append(again, engine.WaitCall{Seq: c.seq, Call: run.ToolCall{ID: c.id, Name: "tool_" + c.id, Arguments: `{}`}, External: true})
		}
	}
	if len(again) > 0 {
		r.wait(again)
		return false
	}
	if err := ex(r.d).FinishRun(ctx, r.id, r.execution, engine.Finish{Status: run.StatusCompleted}); err != nil {
		r.t.Fatalf("finish: %v", err)
	}
	return true
}

// check holds the stored run to the model: its status and open calls, one
// answer row per answered call, a tool step for each result or rejection.
func (r *answerRun) check(finished bool) {
	r.t.Helper()
	ctx := kerntest.Context(r.t, 10*time.Second)
	out, err := r.d.GetRun(ctx, r.id)
	if err != nil {
		r.t.Fatal(err)
	}
	var open []string
	for _, c := range out.Waiting {
		open = append(open, c.ID)
	}
	want := slices.Sorted(func(yield func(string) bool) {
		for id := range r.flagged {
			if !yield(id) {
				return
			}
		}
	})
	switch {
	case finished && out.Status != run.StatusCompleted:
		r.t.Fatalf("run %s is %s, want completed", r.id, out.Status)
	case !finished && len(want) > 0 && (out.Status != run.StatusWaiting || fmt.Sprint(open) != fmt.Sprint(want)):
		r.t.Fatalf("run %s is %s waiting on %v, want waiting on %v", r.id, out.Status, open, want)
	case !finished && len(want) == 0 && out.Status != run.StatusPending:
		r.t.Fatalf("run %s is %s with every call answered, want pending", r.id, out.Status)
	}
	rows, err := r.d.Pool().Query(ctx, `SELECT a.call_id, a.kind, s.seq IS NOT NULL FROM kern_run_answer a
		LEFT JOIN kern_run_step s ON s.run_id = a.run_id AND s.tool_call_id = a.call_id WHERE a.run_id = $1`, r.id)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var call, kind string
		var step bool
		if err := rows.Scan(&call, &kind, &step); err != nil {
			r.t.Fatal(err)
		}
		if step != r.stepped[call] || (kind == "approved") == r.stepped[call] {
			r.t.Fatalf("run %s: call %s has answer %s, step %v; want step %v", r.id, call, kind, step, r.stepped[call])
		}
	}
	if err := rows.Err(); err != nil {
		r.t.Fatal(err)
	}
}

var answerKinds = []string{"approve", "reject", "result"}

// Sequences of answers, one at a time: approvals, rejections and results
// of every call, repeated, in any order, over the run's waits. Each answer
// does what the model says (stands, or is ErrNotWaiting or
// ErrInvalidArgument and changes nothing), and the run always stays
// answerable: it ends once its calls are answered.
func TestAnswerSequences(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		r := newAnswerRun(t, d, fmt.Sprintf("seq-%d", seed))
		finished := false
		for round := 0; !finished; round++ {
			for range 1 + rng.IntN(6) {
				kind, call := answerKinds[rng.IntN(3)], fmt.Sprintf("c%d", 1+rng.IntN(4)) // c4: never asked
				if round >= 3 {
					kind = "result" // a person who knows: every open call gets its result
				}
				want := r.expect(kind, call)
				seq, _ := ex(d).lastSeq(t.Context(), r.id)
				err := r.answer(kind, call)
				if !errors.Is(err, want) || (want == nil) != (err == nil) {
					t.Fatalf("seed %d: %s %s: %v, want %v", seed, kind, call, err, want)
				}
				if after, _ := ex(d).lastSeq(t.Context(), r.id); err != nil && after != seq {
					t.Fatalf("seed %d: the refused %s of %s wrote events", seed, kind, call)
				}
				if err == nil {
					r.apply(kind, call)
				}
				r.check(false)
				if len(r.flagged) == 0 {
					break
				}
			}
			if len(r.flagged) == 0 {
				finished = r.resume()
				r.check(finished)
			}
		}
	}
}

// The same, concurrently: every answer of a round at once. Each is nil,
// ErrNotWaiting or ErrInvalidArgument, never a Postgres error, and the
// run ends once its calls are answered.
func TestAnswerSequencesConcurrent(t *testing.T) {
	t.Parallel()
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 60*time.Second)
	for seed := range uint64(15) {
		rng := rand.New(rand.NewPCG(seed, 11))
		r := newAnswerRun(t, d, fmt.Sprintf("conc-%d", seed))
		finished := false
		for round := 0; !finished; round++ {
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 4 + rng.IntN(8) {
				kind, call := answerKinds[rng.IntN(3)], fmt.Sprintf("c%d", 1+rng.IntN(3))
				if round >= 3 {
					kind = "result"
				}
				wg.Go(func() {
					<-start
					if err := r.answer(kind, call); err != nil && !errors.Is(err, run.ErrNotWaiting) && !errors.Is(err, run.ErrInvalidArgument) {
						t.Errorf("seed %d: %s %s: %v", seed, kind, call, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			// What stood, as stored, becomes the model.
			out, err := d.GetRun(ctx, r.id)
			if err != nil {
				t.Fatal(err)
			}
			still := map[string]bool{}
			for _, c := range out.Waiting {
				still[c.ID] = true
			}
			for call := range r.flagged {
				if still[call] {
					continue
				}
				var kind string
				if err := d.Pool().QueryRow(ctx, `SELECT kind FROM kern_run_answer WHERE run_id = $1 AND call_id = $2`, r.id, call).Scan(&kind); err != nil {
					t.Fatalf("seed %d: call %s left the wait without an answer: %v", seed, call, err)
				}
				r.apply(map[string]string{"approved": "approve", "rejected": "reject", "result": "result"}[kind], call)
			}
			r.check(false)
			if len(r.flagged) == 0 {
				finished = r.resume()
				r.check(finished)
			}
		}
	}
}
