package agent_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// chaosAnswer is the whole answer the model gives to prompt.
func chaosAnswer(prompt string) string { return "Answer to " + prompt + ": " + fakellm.LoremWords(10) }

// TestChaosInvariants submits 1,200 runs to three worker processes
// while they are killed (SIGKILL) or stopped (SIGTERM) and replaced, the
// model fails in every scripted way, and a third of the runs are cancelled
// at random moments. After quiescence it checks kern's promises for every
// run: it is terminal; CancelRun=true means cancelled; a completed run holds
// the model's whole answer; its event log has exactly one terminal event and
// adds up to its content; and no terminal status was ever seen to change.
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
		answer := chaosAnswer(req.LastUserMessage())
		switch r := rand.IntN(100); {
		case r < 8:
			return fakellm.Reply{Status: 503, ErrorMessage: "overloaded"}
		case r < 12:
			return fakellm.Reply{Status: 429, ErrorMessage: "rate limited", RetryAfter: "0"}
		case r < 16:
			return fakellm.Reply{Content: answer, CutAfter: 2}
		case r < 18:
			return fakellm.Reply{Status: 400, ErrorMessage: "bad request"}
		case r < 25:
			return fakellm.Reply{Content: answer, Drip: 20 * time.Millisecond}
		default:
			return fakellm.Reply{Content: answer, Drip: time.Millisecond}
		}
	})
	submitter := submitterOn(t, dbURL)
	ctx := kerntest.Context(t, 3*time.Minute)

	// Worker processes, replaced as they die.
	var procMu sync.Mutex
	procs := []*workerProcess{}
	spawned := 0
	spawn := func() {
		spawned++
		p := startWorkerProcess(t, fmt.Sprintf("w%d", spawned), dbURL, modelURL, rescueAfter)
		procMu.Lock()
		procs = append(procs, p)
		procMu.Unlock()
	}
	for range 3 {
		spawn()
	}
	var kills, terms atomic.Int64
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		tick := time.NewTicker(700 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopChaos:
				return
			case <-tick.C:
			}
			procMu.Lock()
			i := rand.IntN(len(procs))
			victim := procs[i]
			procs = append(procs[:i], procs[i+1:]...)
			procMu.Unlock()
			// Two kills for every graceful stop, kills first.
			if (kills.Load()+terms.Load())%3 == 2 {
				victim.terminate()
				terms.Add(1)
			} else {
				victim.kill()
				kills.Add(1)
			}
			spawn()
		}
	}()

	// Observer: the first terminal status seen for each run must never change.
	firstSeen := map[string]run.Status{}
	var changed []string
	stopObserving := make(chan struct{})
	observerDone := make(chan struct{})
	observe := func() {
		rows, err := submitter.DB.Pool().Query(ctx, `SELECT id, status FROM kern_run WHERE status IN ('completed', 'error', 'cancelled')`)
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
			if prev, ok := firstSeen[id]; ok && prev != st {
				changed = append(changed, fmt.Sprintf("%s: %s → %s", id, prev, st))
			} else if !ok {
				firstSeen[id] = st
			}
		}
	}
	go func() {
		defer close(observerDone)
		for {
			select {
			case <-stopObserving:
				return
			case <-time.After(50 * time.Millisecond):
				observe()
			}
		}
	}()

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
	waitFor(t, 2*time.Minute, "every run to be terminal", func() bool {
		var open int
		err := submitter.DB.Pool().QueryRow(ctx, `SELECT count(*) FROM kern_run WHERE status NOT IN ('completed', 'error', 'cancelled')`).Scan(&open)
		return err == nil && open == 0
	})
	close(stopChaos)
	<-chaosDone
	close(stopObserving)
	<-observerDone
	observe()

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
		runs, counts, kills.Load(), terms.Load(), fake.Count())
	if kills.Load() == 0 || counts[run.StatusCompleted] == 0 || counts[run.StatusCancelled] == 0 {
		t.Fatalf("the chaos did not exercise enough: %v, %d kills", counts, kills.Load())
	}
}

// checkChaosLog: gap-free seqs, exactly one terminal event (last, matching
// the status), and the deltas of the last attempt add up to the content.
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
		case run.EventRunStarted, run.EventRunRetrying, run.EventRunReleased:
			content.Reset() // a new attempt starts its content afresh
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
