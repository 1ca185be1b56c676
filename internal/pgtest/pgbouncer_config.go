package pgtest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

func (cfg BouncerConfig) validate() error {
	switch cfg.Mode {
	case "", PoolSession, PoolTransaction, PoolStatement:
	default:
		return fmt.Errorf("pgtest: unknown pgbouncer pool mode %q", cfg.Mode)
	}
	if cfg.ServerLifetime < 0 || cfg.ServerIdleTimeout < 0 {
		return fmt.Errorf("pgtest: negative pgbouncer timeout (lifetime %v, idle %v)", cfg.ServerLifetime, cfg.ServerIdleTimeout)
	}
	if cfg.DefaultPoolSize < 0 || cfg.MaxClientConn < 0 {
		return fmt.Errorf("pgtest: negative pgbouncer size (pool %d, clients %d)", cfg.DefaultPoolSize, cfg.MaxClientConn)
	}
	return checkIniValue("reset query", cfg.ResetQuery)
}

// checkIniValue refuses what pgbouncer.ini cannot hold unquoted: a value
// runs to the end of its line, and [databases] entries split on spaces.
func checkIniValue(what, v string) error {
	if strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("pgtest: pgbouncer %s %q has a line break", what, v)
	}
	if what != "reset query" && strings.ContainsAny(v, " \t'\"") {
		return fmt.Errorf("pgtest: pgbouncer %s %q has a space or quote", what, v)
	}
	return nil
}

// bouncerIni is pgbouncer.ini for a PgBouncer listening on 127.0.0.1:port
// in front of tc's server, keeping its files in dir.
func bouncerIni(dir string, tc *pgx.ConnConfig, cfg BouncerConfig, port int) string {
	mode := cfg.Mode
	if mode == "" {
		mode = PoolSession
	}
	poolSize, maxClients := cfg.DefaultPoolSize, cfg.MaxClientConn
	if poolSize == 0 {
		poolSize = 20
	}
	if maxClients == 0 {
		maxClients = 500
	}
	var b strings.Builder
	// The * entry sends every database name to the same server, so one
	// PgBouncer serves all of a test's databases. tc.Host may be a unix
	// socket directory, which host= accepts too.
	fmt.Fprintf(&b, "[databases]\n* = host=%s port=%d\n\n", tc.Host, tc.Port)
	fmt.Fprintf(&b, "[pgbouncer]\n")
	fmt.Fprintf(&b, "listen_addr = 127.0.0.1\nlisten_port = %d\n", port)
	// No unix socket: its default dir (/tmp) would be shared with every
	// other PgBouncer on the machine, and nothing here needs it.
	fmt.Fprintf(&b, "unix_socket_dir =\n")
	fmt.Fprintf(&b, "pool_mode = %s\n", mode)
	fmt.Fprintf(&b, "auth_type = trust\nauth_file = %s\n", filepath.Join(dir, "users.txt"))
	// The target's role may use the admin console (SHOW POOLS; on the
	// pgbouncer database).
	fmt.Fprintf(&b, "admin_users = %s\n", tc.User)
	fmt.Fprintf(&b, "logfile = %s\npidfile = %s\n", filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	// pgx sends search_path as a startup parameter when kern is given a
	// schema. PgBouncer would refuse the connection over it; ignored, it is
	// accepted but NOT applied on the server, which is why kern documents
	// setting the role's search_path when running behind a pooler.
	fmt.Fprintf(&b, "ignore_startup_parameters = extra_float_digits,search_path\n")
	fmt.Fprintf(&b, "max_client_conn = %d\ndefault_pool_size = %d\n", maxClients, poolSize)
	// After a failed server login PgBouncer waits server_login_retry (15s)
	// before trying again; a second keeps a test that restarts its server
	// from stalling.
	fmt.Fprintf(&b, "server_login_retry = 1\n")
	if cfg.ServerLifetime > 0 {
		fmt.Fprintf(&b, "server_lifetime = %s\n", iniSeconds(cfg.ServerLifetime))
	}
	if cfg.ServerIdleTimeout > 0 {
		fmt.Fprintf(&b, "server_idle_timeout = %s\n", iniSeconds(cfg.ServerIdleTimeout))
	}
	if cfg.ResetQuery != "" {
		fmt.Fprintf(&b, "server_reset_query = %s\n", cfg.ResetQuery)
	}
	return b.String()
}

// iniSeconds writes d in seconds. PgBouncer 1.18 parses fractions ("1.5");
// d is rounded up to a millisecond so that a tiny value cannot turn into 0,
// which for server_lifetime means "use a server connection once".
func iniSeconds(d time.Duration) string {
	d = (d + time.Millisecond - 1).Truncate(time.Millisecond)
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// quoteUserlist quotes s for PgBouncer's auth_file, where a double quote
// inside a value is doubled.
func quoteUserlist(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// writeOwned writes a file only we and as can read: the user list may hold
// the target's password.
func writeOwned(as *account, path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("pgtest: write %s: %w", filepath.Base(path), err)
	}
	if err := as.chown(path); err != nil {
		return fmt.Errorf("pgtest: hand %s to %s: %w", filepath.Base(path), as.name, err)
	}
	return nil
}

// bouncerURL points target at 127.0.0.1:port, keeping user, database and
// options. sslmode becomes disable: PgBouncer has no client-side TLS here.
func bouncerURL(target string, port int) (string, error) {
	if strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://") {
		u, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("pgtest: parse pgbouncer target: %w", err)
		}
		u.Host = "127.0.0.1:" + strconv.Itoa(port)
		q := u.Query()
		// libpq lets ?host= and ?port= override the authority.
		q.Del("host")
		q.Del("port")
		q.Del("hostaddr")
		q.Set("sslmode", "disable")
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	dsn := setKeyword(target, "host", "127.0.0.1")
	dsn = setKeyword(dsn, "port", strconv.Itoa(port))
	return setKeyword(dsn, "sslmode", "disable"), nil
}
