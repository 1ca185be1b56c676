package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/pgtest"
)

// bouncerCrashSignatures are what PgBouncer 1.18 logs when it or a server
// connection goes wrong, rather than a client merely going away: a FATAL
// (it exits), a server connection in a state it did not expect, a packet
// from a server no client is linked to (a protocol desync, e.g. after a
// cancel or a prepared statement leaked between clients).
var bouncerCrashSignatures = []string{"FATAL", "server in bad state", "got packet", "bad packet", "broken packet"}

// checkBouncer fails t when PgBouncer died or logged a crash signature.
// Call it at the end of every test that goes through PgBouncer.
func checkBouncer(t *testing.T, b *pgtest.Bouncer) {
	t.Helper()
	if !b.Alive() {
		t.Fatalf("PgBouncer died:\n%s", b.Log())
	}
	var cancels []string
	for _, line := range strings.Split(b.Log(), "\n") {
		for _, sig := range bouncerCrashSignatures {
			if strings.Contains(line, sig) {
				t.Errorf("PgBouncer logged %q: %s", sig, line)
			}
		}
		if strings.Contains(strings.ToLower(line), "cancel") {
			cancels = append(cancels, line)
		}
	}
	// pgx sends a protocol cancel request when a query's context ends
	// mid-flight; through a pooler it goes to whichever server the client
	// is linked to at that moment. Logged (-v) to show whether kern sends
	// any and how PgBouncer took them.
	if len(cancels) > 0 {
		t.Logf("PgBouncer logged %d lines about cancel requests, the first: %s", len(cancels), cancels[0])
	}
}

// bouncerFor starts a PgBouncer of c's mode (and cfg) in front of dbURL, a
// migrated database. Unless cfg says otherwise, a session pooler gets 40
// servers, room for a server per client connection of a test's two
// workers and its submitter, and a transaction pooler 10, fewer than
// its clients, as it would have in production.
func bouncerFor(t *testing.T, dbURL string, c poolerCase, cfg pgtest.BouncerConfig) *pgtest.Bouncer {
	t.Helper()
	cfg.Mode = c.mode
	if cfg.DefaultPoolSize == 0 {
		cfg.DefaultPoolSize = 10
		if c.mode == pgtest.PoolSession {
			cfg.DefaultPoolSize = 40
		}
	}
	return pgtest.NewBouncer(t, dbURL, cfg)
}

// openThrough opens kern on pooled, a URL of PgBouncer's, as c says
// (direct: WithDirectURL to dbURL), closed when t ends, and checks the
// pool mode kern found.
func openThrough(t *testing.T, ctx context.Context, pooled, dbURL string, c poolerCase) *db.DB {
	t.Helper()
	var opts []db.Option
	if c.direct {
		opts = append(opts, db.WithDirectURL(dbURL))
	}
	d, err := db.Open(ctx, pooled, opts...)
	if err != nil {
		t.Fatalf("open through PgBouncer (%s): %v", c.name, err)
	}
	t.Cleanup(d.Close)
	if d.PoolMode() != c.want {
		t.Fatalf("through PgBouncer in %s mode kern found pool mode %q; want %q", c.mode, d.PoolMode(), c.want)
	}
	return d
}

// poolerCaseNamed is the case of poolerCases with that name.
func poolerCaseNamed(t *testing.T, name string) poolerCase {
	t.Helper()
	for _, c := range poolerCases {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no pooler case %q", name)
	return poolerCase{}
}
