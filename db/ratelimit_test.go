package db_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

func reserve(t *testing.T, rl engine.RateLimiter, runID, model string, tokens int) engine.Grant {
	t.Helper()
	g, err := rl.Reserve(context.Background(), engine.Reservation{Fence: engine.Fence{RunID: runID, Execution: 1}, Model: model, Tokens: tokens})
	if err != nil {
		t.Fatalf("reserve %s: %v", runID, err)
	}
	return g
}

func TestSetRateLimitValidatesAndLists(t *testing.T) {
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 10*time.Second)
	for _, bad := range []run.RateLimit{{RequestsPerMinute: 1}, {Model: "m", RequestsPerMinute: -1}, {Model: "m", TokensPerMinute: -5}} {
		if err := d.SetRateLimit(ctx, bad); !errors.Is(err, run.ErrInvalidArgument) {
			t.Fatalf("SetRateLimit(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if got, err := d.ListRateLimits(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after bad input: %v, %v; want nothing written", got, err)
	}
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "b", RequestsPerMinute: 60}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "a", TokensPerMinute: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "b", RequestsPerMinute: 30, TokensPerMinute: 10}); err != nil {
		t.Fatal(err)
	}
	got, err := d.ListRateLimits(ctx)
	want := []run.RateLimit{{Model: "a", TokensPerMinute: 1000}, {Model: "b", RequestsPerMinute: 30, TokensPerMinute: 10}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ListRateLimits = %v, %v; want %v", got, err, want)
	}
	rl := d.RateLimiter(engine.Key{})
	if !rl.Limited("a") || !rl.Limited("b") || rl.Limited("c") {
		t.Fatal("Limited does not match the limits set")
	}
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "a"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.ListRateLimits(ctx); len(got) != 1 || got[0].Model != "b" {
		t.Fatalf("after removing a: %v", got)
	}
	if rl.Limited("a") {
		t.Fatal("a removed limit is still cached in the process that removed it")
	}
}

// TestRateLimitWindowIsExact: a request budget is a burst up to the budget,
// then nothing until the first grant leaves the window, with the wait to
// that moment; concurrent reservations from several DB handles (as from
// several workers) never get more than the budget. The window is a minute,
// so however slowly the 30 reservations come, they fall in one window; its
// passing is the grants' dates moved back a window in Postgres.
func TestRateLimitWindowIsExact(t *testing.T) {
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	ctx := kerntest.Context(t, 30*time.Second)
	const model, budget, window = "m", 10, time.Minute
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: model, RequestsPerMinute: budget}); err != nil {
		t.Fatal(err)
	}
	if err := d.RateLimiter(engine.Key{}).SetWindow(ctx, model, window); err != nil {
		t.Fatal(err)
	}
	handles := []*db.DB{d, kerntest.Open(t, url), kerntest.Open(t, url)}
	var mu sync.Mutex
	granted, refused := 0, 0
	var minWait time.Duration = time.Hour
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			g := reserve(t, handles[i%3].RateLimiter(engine.Key{}), fmt.Sprintf("r%d", i), model, 1)
			mu.Lock()
			defer mu.Unlock()
			if g.OK {
				granted++
			} else {
				refused++
				minWait = min(minWait, g.Wait)
				if g.Reason != "requests" && g.Reason != "queue" {
					t.Errorf("refused for %q", g.Reason)
				}
			}
		})
	}
	wg.Wait()
	if granted != budget || refused != 30-budget {
		t.Fatalf("granted %d, refused %d; want %d and %d", granted, refused, budget, 30-budget)
	}
	if minWait <= 0 || minWait > window {
		t.Fatalf("a refusal's wait is %v, want in (0, %v]", minWait, window)
	}
	// Withdraw the waiters, so the queue does not hold the next ask back.
	for i := range 30 {
		_ = d.RateLimiter(engine.Key{}).Withdraw(ctx, engine.Fence{RunID: fmt.Sprintf("r%d", i), Execution: 1}, model)
	}
	// Not before the window passed; once it did, the budget is whole again.
	if g := reserve(t, d.RateLimiter(engine.Key{}), "early", model, 1); g.OK {
		t.Fatalf("within the window: %+v, want refused", g)
	}
	_ = d.RateLimiter(engine.Key{}).Withdraw(ctx, engine.Fence{RunID: "early", Execution: 1}, model)
	if _, err := d.Pool().Exec(ctx, `UPDATE kern_rate_grant SET at = at - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	for i := range budget {
		if g := reserve(t, d.RateLimiter(engine.Key{}), fmt.Sprintf("late%d", i), model, 1); !g.OK {
			t.Fatalf("after the window, reservation %d: %+v; want the whole budget back", i, g)
		}
	}
}

// TestRateLimitTokensReconcile: a grant counts its estimate until
// reconciled with the usage reported; then the window counts that.
func TestRateLimitTokensReconcile(t *testing.T) {
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 10*time.Second)
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "m", TokensPerMinute: 1000}); err != nil {
		t.Fatal(err)
	}
	rl := d.RateLimiter(engine.Key{})
	g := reserve(t, rl, "a", "m", 10)
	if !g.OK || !g.TokenLimited || g.ID == 0 {
		t.Fatalf("first reservation: %+v", g)
	}
	if g2 := reserve(t, rl, "b", "m", 900); !g2.OK {
		t.Fatalf("900 more of 1000 with 10 used: %+v", g2)
	} else if err := rl.Reconcile(ctx, g2, 100); err != nil { // it spent 100, not 900
		t.Fatal(err)
	}
	if err := rl.Reconcile(ctx, g, 800); err != nil { // it spent 800, not 10
		t.Fatal(err)
	}
	// 900 counted now: 200 does not fit, 100 does.
	if g3 := reserve(t, rl, "c", "m", 200); g3.OK || g3.Reason != "tokens" || g3.Wait <= 0 {
		t.Fatalf("200 over 900 of 1000: %+v, want refused for tokens", g3)
	}
	if err := rl.Withdraw(ctx, engine.Fence{RunID: "c", Execution: 1}, "m"); err != nil {
		t.Fatal(err)
	}
	if g4 := reserve(t, rl, "d", "m", 100); !g4.OK {
		t.Fatalf("100 over 900 of 1000: %+v, want granted", g4)
	}
	var used int64
	if err := d.Pool().QueryRow(ctx, `SELECT tokens_used FROM kern_rate_limit WHERE model = 'm'`).Scan(&used); err != nil || used != 1000 {
		t.Fatalf("tokens_used = %d, %v; want 1000", used, err)
	}
}

// TestRateLimitPause: a pause refuses every reservation of the model until
// it ends, and a shorter pause does not shorten it. The wait is judged
// against the time the test took since it paused, however long that was.
func TestRateLimitPause(t *testing.T) {
	d := kerntest.DB(t)
	ctx := kerntest.Context(t, 10*time.Second)
	if err := d.SetRateLimit(ctx, run.RateLimit{Model: "m", RequestsPerMinute: 1000}); err != nil {
		t.Fatal(err)
	}
	rl := d.RateLimiter(engine.Key{})
	const pause = time.Minute
	paused := time.Now()
	if err := rl.Pause(ctx, "m", pause); err != nil {
		t.Fatal(err)
	}
	if err := rl.Pause(ctx, "m", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	g := reserve(t, rl, "a", "m", 1)
	if since := time.Since(paused); g.OK || g.Reason != "paused" || g.Wait < pause-since || g.Wait > pause {
		t.Fatalf("reservation %v into a %v pause: %+v; want refused (paused), a wait of the rest of the pause", since, pause, g)
	}
}
