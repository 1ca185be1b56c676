package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// After Worker.Stop and DB.Close, nothing of kern's, River's, pgx's or the
// model client's is left running: every background goroutine (listener,
// batchers, heartbeats, rescue, River's producers, HTTP keep-alives) ends
// with its owner.
//
// Not parallel on purpose: sequential tests run while the parallel ones
// wait, so the goroutines that appear and stay are this test's own.
func TestNoGoroutineOutlivesStopAndClose(t *testing.T) {
	before := goroutineIDs()
	url := kerntest.DatabaseURL(t)
	ctx := kerntest.Context(t, time.Minute)

	func() {
		d, err := db.Open(ctx, kerntest.WithPoolSize(url, kerntest.TestPoolSize))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		fake := fakellm.New()
		base, stopModel, err := fake.Start()
		if err != nil {
			t.Fatal(err)
		}
		defer stopModel()
		fake.Script(func(req fakellm.Request) fakellm.Reply {
			if strings.Contains(req.LastUserMessage(), "slow") {
				return fakellm.Reply{Content: fakellm.LoremWords(200), Drip: 20 * time.Millisecond}
			}
			return fakellm.Reply{Content: "The capital of France is Paris."}
		})
		a := &agent.Agent{Name: "leaky", Model: agent.OpenAIChat{Client: agent.NewOpenAIClient("k", base), ID: "m"}, DB: d}
		w, err := agent.NewWorker(d, agent.WorkerConfig{HeartbeatInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Stop(stopCtx); err != nil {
				t.Errorf("stop worker: %v", err)
			}
		}()

		// Concurrent submits and waits (the batchers), events followed to
		// the end, a cancel mid-stream, a foreground run with OnEvent.
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
				if err == nil {
					_, err = a.WaitRun(ctx, out.RunID)
				}
				if err != nil {
					t.Error(err)
				}
			})
		}
		slow, err := a.Run(ctx, "slow", agent.Background(true))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for _, err := range a.Events(ctx, slow.RunID, 0) {
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
		waitFor(t, 10*time.Second, "the slow run to stream", func() bool {
			out, err := a.GetRunOutput(ctx, slow.RunID)
			return err == nil && out.Content != ""
		})
		if _, err := a.CancelRun(ctx, slow.RunID); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Run(ctx, "What is the capital of France?", agent.OnEvent(func(run.Event) {})); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if final := mustWait(t, a, slow.RunID); final.Status != run.StatusCancelled {
			t.Fatalf("slow run ended %s, want cancelled", final.Status)
		}
	}()

	var left []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = leftovers(before)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d goroutines outlived Worker.Stop and DB.Close:\n\n%s", len(left), strings.Join(left, "\n\n"))
}

var goroutineHeader = regexp.MustCompile(`^goroutine (\d+) `)

// goroutineStacks returns every goroutine's stack by id.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if m := goroutineHeader.FindSubmatch(g); m != nil {
			stacks[string(m[1])] = string(g)
		}
	}
	return stacks
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

// ownedByKern says whether a stack belongs to something kern starts or
// owns; the test runner's own goroutines are not.
var ownedByKern = regexp.MustCompile(`github\.com/kern-go/kern/(db|agent|internal/fakellm)\.|github\.com/riverqueue/|github\.com/jackc/pgx|net/http\.`)

// leftovers are the stacks of kern-owned goroutines that are new since
// before.
func leftovers(before map[string]bool) []string {
	var out []string
	for id, stack := range goroutineStacks() {
		if !before[id] && ownedByKern.MatchString(stack) && !strings.Contains(stack, "testing.tRunner") {
			out = append(out, stack)
		}
	}
	return out
}
