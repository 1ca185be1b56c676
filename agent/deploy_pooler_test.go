package agent_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// poolerCase is one way of reaching Postgres through PgBouncer.
type poolerCase struct {
	name   string
	mode   pgtest.PoolMode
	direct bool // WithDirectURL to the database itself
	want   db.PoolMode
}

var poolerCases = []poolerCase{
	{"session", pgtest.PoolSession, false, db.PoolModeSession},
	{"transaction", pgtest.PoolTransaction, false, db.PoolModeTransaction},
	{"transaction+direct", pgtest.PoolTransaction, true, db.PoolModeTransaction},
}

// openPooled migrates dbURL directly and opens it through a PgBouncer of
// c's mode, as a user would: the plain URL, kern finding out the rest.
func openPooled(t *testing.T, ctx context.Context, dbURL string, c poolerCase, cfg pgtest.BouncerConfig) (*db.DB, *pgtest.Bouncer) {
	t.Helper()
	migrated, err := db.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrated.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	migrated.Close()
	cfg.Mode = c.mode
	b := pgtest.NewBouncer(t, dbURL, cfg)
	var opts []db.Option
	if c.direct {
		opts = append(opts, db.WithDirectURL(dbURL))
	}
	d, err := db.Open(ctx, b.URL(), opts...)
	if err != nil {
		t.Fatalf("open through PgBouncer (%s): %v", c.name, err)
	}
	t.Cleanup(d.Close)
	if d.PoolMode() != c.want {
		t.Fatalf("through PgBouncer in %s mode kern found pool mode %q; want %q", c.mode, d.PoolMode(), c.want)
	}
	return d, b
}

// Submit, wait, follow and cancel work through PgBouncer in session and
// transaction mode, with and without a direct URL.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	for _, c := range poolerCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := kerntest.Context(t, 90*time.Second)
			dbURL := pgtest.NewDatabase(t)
			fake, model := deployModel(t)
			d, b := openPooled(t, ctx, dbURL, c, pgtest.BouncerConfig{})
			a := &agent.Agent{Name: "assistant", Model: model, DB: d}
			kerntest.Worker(t, d, agent.WorkerConfig{}, a)

			for i := range 5 {
				id := fmt.Sprintf("r%d", i)
				if _, err := a.Run(ctx, id, agent.Background(true), agent.WithRunID(id)); err != nil {
					t.Fatal(err)
				}
				out := mustWait(t, a, id)
				if out.Status != run.StatusCompleted || out.Content != "answer: "+id {
					t.Fatalf("run %s: %s %q", id, out.Status, out.Content)
				}
			}
			startHanging(t, ctx, a, fake, "c1")
			cancelToEnd(t, ctx, a, "c1")
			if err := d.Migrate(ctx); c.want == db.PoolModeTransaction && !c.direct && !errors.Is(err, run.ErrInvalidArgument) {
				t.Errorf("Migrate behind a transaction pooler without a direct URL: %v; want run.ErrInvalidArgument", err)
			}
			checkBouncer(t, b)
		})
	}
}
