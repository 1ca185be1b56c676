package db_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
)

// kern sends no protocol-level cancel request through a pooler: a
// statement whose context ends is cut off by closing its connection (pgx's
// default), never by a CancelRequest, on which PgBouncer 1.18 can crash
// (its issue #822). The last step sends one by hand, to show that
// PgBouncer's log would tell.
func TestNoCancelRequestsThroughAPooler(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgtest.PoolMode{pgtest.PoolSession, pgtest.PoolTransaction} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			ctx := kerntest.Context(t, 60*time.Second)
			url := kerntest.DatabaseURL(t)
			b := pgtest.NewBouncer(t, url, pgtest.BouncerConfig{Mode: mode})
			d := openThrough(t, b.URL())
			if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "p1", AgentName: "a", Input: "x"}); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				_, err := d.Pool().Exec(short, "SELECT pg_sleep(5)")
				cancel()
				if err == nil {
					t.Fatal("a 5 s statement with a 20 ms deadline succeeded")
				}
				short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
				_, err = d.WaitRun(short, "p1")
				cancel()
				if err == nil {
					t.Fatal("WaitRun of a pending run returned within its 20 ms deadline")
				}
			}
			if _, err := d.GetRun(ctx, "p1"); err != nil {
				t.Fatalf("the DB after its cut-off statements: %v", err)
			}
			if !b.Alive() {
				t.Fatalf("PgBouncer died:\n%s", b.Log())
			}
			if log := b.Log(); strings.Contains(log, "cancel request") {
				t.Fatalf("kern sent a cancel request through PgBouncer:\n%s", log)
			}

			// The control: a cancel request does show in PgBouncer's log.
			conn, err := pgx.Connect(ctx, b.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			errc := make(chan error, 1)
			go func() {
				_, err := conn.Exec(ctx, "SELECT pg_sleep(30)", pgx.QueryExecModeSimpleProtocol)
				errc <- err
			}()
			// Again and again: one sent before the statement started cancels nothing.
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
		wait:
			for {
				select {
				case err := <-errc:
					if err == nil {
						t.Fatal("the cancelled statement succeeded")
					}
					break wait
				case <-tick.C:
					_ = conn.PgConn().CancelRequest(ctx)
				}
			}
			if !strings.Contains(b.Log(), "sent cancel request") {
				t.Fatalf("PgBouncer's log does not show the cancel request:\n%s", b.Log())
			}
		})
	}
}
