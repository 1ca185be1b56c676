package kerntest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/pgproxy"
)

// ProxiedDB opens a fresh migrated database through a pgproxy.Proxy, so the
// test can cut a connection at a chosen statement. Both close when the test
// ends.
func ProxiedDB(t testing.TB) (*db.DB, *pgproxy.Proxy) {
	t.Helper()
	direct := DatabaseURL(t)
	cfg, err := pgx.ParseConfig(direct)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	network, addr := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if len(cfg.Host) > 0 && cfg.Host[0] == '/' { // a Unix socket directory
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	p, err := pgproxy.Start(network, addr)
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(p.Close)
	u := url.URL{Scheme: "postgres", Host: p.Addr(), Path: "/" + cfg.Database,
		User: url.UserPassword(cfg.User, cfg.Password)}
	if cfg.Password == "" {
		u.User = url.User(cfg.User)
	}
	// The proxy reads statement texts, so every execution must carry its
	// text (no cached prepared statements), and it cannot read TLS.
	u.RawQuery = "sslmode=disable&default_query_exec_mode=exec"
	return Open(t, u.String()), p
}
