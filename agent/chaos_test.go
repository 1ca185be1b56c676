package agent_test

import (
	"context"
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

// chaosAnswer is the whole answer the model gives to prompt.
func chaosAnswer(prompt string) string { return "Answer to " + prompt + ": " + fakellm.LoremWords(10) }

// chaosFault returns r, or one of the model's scripted faults in its place,
// at random: overloaded, rate limited, a cut stream, a bad request, a slow
// stream.
func chaosFault(r fakellm.Reply) fakellm.Reply {
	switch n := rand.IntN(100); {
	case n < 8:
		return fakellm.Reply{Status: 503, ErrorMessage: "overloaded"}
	case n < 12:
		return fakellm.Reply{Status: 429, ErrorMessage: "rate limited", RetryAfter: "0"}
	case n < 16:
		r.CutAfter = 2
	case n < 18:
		return fakellm.Reply{Status: 400, ErrorMessage: "bad request"}
	case n < 25:
		r.Drip = 20 * time.Millisecond
	default:
		r.Drip = time.Millisecond
	}
	return r
}

// TestChaosInvariants submits 1,200 runs to three worker processes
// while they are killed (SIGKILL) or stopped (SIGTERM) and replaced, the
// model fails in every scripted way, and a third of the runs are cancelled
// at random moments. After quiescence it checks kern's promises for every
// run: it is terminal; CancelRun=true means cancelled; a completed run holds
// the model's whole answer; its event log has exactly one terminal event and
// adds up to its content; and no terminal status was ever seen to change.
// TestChaosApprovals (chaos_approval_test.go) adds tool runs that wait for
// approvals.
func TestChaosInvariants(t *testing.T) {
	t.Parallel()
	runs := 1200
	if testing.Short() {
		runs = 150
	}
	const rescueAfter = 1500 * time.Millisecond
	dbURL := kerntest.DatabaseURL(t)
	fake, modelURL := kerntest.ModelServer(t)
	fake.Script(func(req fakellm.Request) fakellm.Reply {
		return chaosFault(fakellm.Reply{Content: chaosAnswer(req.LastUserMessage())})
	})
	submitter := submitterOn(t, dbURL)
	ctx := kerntest.Context(t, 3*time.Minute)

	fleet := startChaosFleet(t, dbURL, modelURL, rescueAfter)
	observer := observeTerminal(ctx, submitter.DB)

	// Submitters; a third of the runs are cancelled at a random moment.
	cancelled := make([]bool, runs)
	var next atomic.Int64
	var wg, cancels sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= runs {
					return
				}
				id := fmt.Sprintf("chaos-%04d", i)
				_, err := submitter.Run(ctx, fmt.Sprintf("q%d", i), agent.Background(true), agent.WithRunID(id))
				if err != nil {
					t.Errorf("submit %s: %v", id, err)
					return
				}
				if i%3 == 0 {
					cancels.Go(func() {
						time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // the random moment
						ok, err := submitter.CancelRun(ctx, id)
						if err != nil {
							t.Errorf("cancel %s: %v", id, err)
						}
						cancelled[i] = ok
					})
				}
			}
		})
	}
	wg.Wait()
	cancels.Wait()

	// Quiescence: every run terminal (faults and kills only delay it).
	waitQuiescent(ctx, t, submitter.DB, 2*time.Minute)
	fleet.halt()
	changed := observer.finish()

	counts := map[run.Status]int{}
	for i := range runs {
		id := fmt.Sprintf("chaos-%04d", i)
		out, err := submitter.GetRunOutput(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		counts[out.Status]++
		switch {
		case !out.Status.Terminal():
			t.Errorf("%s is %s after quiescence", id, out.Status)
		case cancelled[i] && out.Status != run.StatusCancelled:
			t.Errorf("%s: CancelRun answered true, the run ended %s (%s)", id, out.Status, out.Error)
		case out.Status == run.StatusCompleted && out.Content != chaosAnswer(fmt.Sprintf("q%d", i)):
			t.Errorf("%s: completed with %q", id, out.Content)
		}
		checkChaosLog(t, collect(t, submitter, id, 0), out)
	}
	if len(changed) > 0 {
		t.Errorf("terminal statuses changed: %v", changed)
	}
	t.Logf("%d runs: %v; %d worker kills, %d graceful stops, %d model requests",
		runs, counts, fleet.kills.Load(), fleet.terms.Load(), fake.Count())
	if fleet.kills.Load() == 0 || counts[run.StatusCompleted] == 0 || counts[run.StatusCancelled] == 0 {
		t.Fatalf("the chaos did not exercise enough: %v, %d kills", counts, fleet.kills.Load())
	}
}

// chaosFleet is three worker processes, one of which is killed (SIGKILL)
// or stopped (SIGTERM) and replaced every 700ms: two kills for every
// graceful stop, kills first.
type chaosFleet struct {
	start        func(name string) *workerProcess
	mu           sync.Mutex
	procs        []*workerProcess
	spawned      int
	kills, terms atomic.Int64
	stop, done   chan struct{}
}

// startChaosFleet starts the fleet; env goes to every worker process.
func startChaosFleet(t *testing.T, dbURL, modelURL string, rescueAfter time.Duration, env ...string) *chaosFleet {
	f := &chaosFleet{
		start: func(name string) *workerProcess {
			return startWorkerProcess(t, name, dbURL, modelURL, rescueAfter, env...)
		},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range 3 {
		f.spawn()
	}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(700 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			f.mu.Lock()
			i := rand.IntN(len(f.procs))
			victim := f.procs[i]
			f.procs = append(f.procs[:i], f.procs[i+1:]...)
			f.mu.Unlock()
			if (f.kills.Load()+f.terms.Load())%3 == 2 {
				victim.terminate()
				f.terms.Add(1)
			} else {
				victim.kill()
				f.kills.Add(1)
			}
			f.spawn()
		}
	}()
	return f
}

// spawn starts a worker process named w1, w2, … and adds it to the fleet.
func (f *chaosFleet) spawn() {
	f.mu.Lock()
	f.spawned++
	name := fmt.Sprintf("w%d", f.spawned)
	f.mu.Unlock()
	p := f.start(name)
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
}

// halt ends the chaos; the processes left run on until the test ends.
func (f *chaosFleet) halt() {
	close(f.stop)
	<-f.done
}

// terminalObserver polls the terminal statuses of all runs: the first
// terminal status seen for each run must never change.
type terminalObserver struct {
	ctx       context.Context
	d         *db.DB
	firstSeen map[string]run.Status
	changed   []string
	stop      chan struct{}
	done      chan struct{}
}

// observeTerminal starts observing the runs of d every 50ms.
func observeTerminal(ctx context.Context, d *db.DB) *terminalObserver {
	o := &terminalObserver{ctx: ctx, d: d, firstSeen: map[string]run.Status{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			select {
			case <-o.stop:
				return
			case <-time.After(50 * time.Millisecond):
				o.observe()
			}
		}
	}()
	return o
}

func (o *terminalObserver) observe() {
	rows, err := o.d.Pool().Query(o.ctx, `SELECT id, status FROM kern_run WHERE status IN ('completed', 'error', 'cancelled')`)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var st run.Status
		if rows.Scan(&id, &st) != nil {
			return
		}
		if prev, ok := o.firstSeen[id]; ok && prev != st {
			o.changed = append(o.changed, fmt.Sprintf("%s: %s → %s", id, prev, st))
		} else if !ok {
			o.firstSeen[id] = st
		}
	}
}

// finish stops observing, observes once more and returns the changes seen.
func (o *terminalObserver) finish() []string {
	close(o.stop)
	<-o.done
	o.observe()
	return o.changed
}

// waitQuiescent waits until every run of d is terminal; on timeout it
// fails, naming the runs still open.
func waitQuiescent(ctx context.Context, t *testing.T, d *db.DB, timeout time.Duration) {
	t.Helper()
	const openRuns = `SELECT id, status, attempt, coalesce(error, ''), waiting_calls::text FROM kern_run
		WHERE status NOT IN ('completed', 'error', 'cancelled') ORDER BY id`
	deadline := time.Now().Add(timeout)
	for {
		var open int
		err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE status NOT IN ('completed', 'error', 'cancelled')`).Scan(&open)
		if err == nil && open == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var stuck []string
	rows, err := d.Pool().Query(ctx, openRuns)
	if err == nil {
		for rows.Next() {
			var id, status, runErr, waiting string
			var attempt int
			if rows.Scan(&id, &status, &attempt, &runErr, &waiting) == nil {
				stuck = append(stuck, fmt.Sprintf("%s %s attempt %d error %q waiting %s", id, status, attempt, runErr, waiting))
			}
		}
		rows.Close()
	}
	t.Fatalf("after %v, %d runs are not terminal: %s", timeout, len(stuck), strings.Join(stuck, "; "))
}

// checkChaosLog: gap-free seqs, exactly one terminal event (last, matching
// the status), and the deltas of the last attempt add up to the content.
// A tool call, a tool result or a wait starts the content afresh too: the
// turn's text is in the transcript.
func checkChaosLog(t *testing.T, events []run.Event, out *run.Output) {
	t.Helper()
	var content strings.Builder
	terminals := 0
	for i, ev := range events {
		if ev.Seq != int64(i+1) {
			t.Errorf("%s: event %d has seq %d", out.RunID, i, ev.Seq)
			return
		}
		switch ev.Type {
		case run.EventRunStarted, run.EventRunRetrying, run.EventRunReleased,
			run.EventToolCall, run.EventToolResult, run.EventRunWaiting:
			content.Reset() // a new attempt or turn starts its content afresh
		case run.EventContentDelta:
			content.WriteString(deltaText(t, ev))
		}
		if ev.Type.Terminal() {
			terminals++
		}
	}
	if terminals != 1 || events[len(events)-1].Type != run.EventType("run."+string(out.Status)) {
		t.Errorf("%s (%s): %d terminal events, last %s", out.RunID, out.Status, terminals, events[len(events)-1].Type)
	}
	if content.String() != out.Content {
		t.Errorf("%s (%s): events add up to %q, content %q", out.RunID, out.Status, content.String(), out.Content)
	}
}
