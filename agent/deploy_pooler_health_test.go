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
	log := b.Log()
	for _, line := range strings.Split(log, "\n") {
		for _, sig := range bouncerCrashSignatures {
			if strings.Contains(line, sig) {
				t.Errorf("PgBouncer logged %q: %s", sig, line)
			}
		}
	}
	// What a reader of the report wants to know: does kern send protocol
	// cancel requests through the pooler (pgx does on a cancelled
	// context), and how did PgBouncer take them.
	if n := strings.Count(strings.ToLower(log), "cancel"); n > 0 {
		t.Logf("PgBouncer's log mentions cancel %d times", n)
	}
}

// bouncerFor starts a PgBouncer of c's mode (and cfg) in front of dbURL, a
// migrated database.
func bouncerFor(t *testing.T, dbURL string, c poolerCase, cfg pgtest.BouncerConfig) *pgtest.Bouncer {
	t.Helper()
	cfg.Mode = c.mode
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
