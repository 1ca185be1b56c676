package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolMode is PgBouncer's pool_mode: when a server connection goes back to
// the pool.
type PoolMode string

// The pool modes PgBouncer knows.
const (
	// PoolSession gives a client one server connection until it
	// disconnects; the server is then reset (DISCARD ALL) and reused.
	PoolSession PoolMode = "session"
	// PoolTransaction hands the server back after every transaction (or
	// every statement outside one): session state such as SET, advisory
	// locks and prepared statements leaks between clients.
	PoolTransaction PoolMode = "transaction"
	// PoolStatement hands the server back after every statement and
	// refuses multi-statement transactions.
	PoolStatement PoolMode = "statement"
)

// ErrNoPgBouncer means no pgbouncer binary was found, so StartBouncer cannot
// run; NewBouncer skips the test.
var ErrNoPgBouncer = errors.New("pgbouncer not found")

// pgbouncerPaths are tried after PATH: Debian installs it in /usr/sbin,
// which is not on an ordinary user's PATH.
var pgbouncerPaths = []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"}

const (
	// bouncerReadyTimeout bounds StartBouncer's wait for the first SELECT 1.
	bouncerReadyTimeout = 10 * time.Second
	// bouncerStopTimeout is how long Stop lets PgBouncer exit on SIGTERM
	// before it uses SIGKILL.
	bouncerStopTimeout = 5 * time.Second
)

// BouncerConfig is what StartBouncer writes into pgbouncer.ini. The zero
// value is a session-mode pooler with PgBouncer's defaults.
type BouncerConfig struct {
	// Mode is pool_mode; "" means PoolSession.
	Mode PoolMode
	// ServerLifetime and ServerIdleTimeout are server_lifetime and
	// server_idle_timeout; 0 keeps PgBouncer's defaults (3600s and 600s).
	// PgBouncer 1.18 takes fractional seconds, so sub-second values are
	// passed as they are.
	ServerLifetime, ServerIdleTimeout time.Duration
	// DefaultPoolSize is default_pool_size, the server connections per
	// (database, user); 0 means 20.
	DefaultPoolSize int
	// MaxClientConn is max_client_conn; 0 means 500.
	MaxClientConn int
	// ResetQuery is server_reset_query; "" keeps PgBouncer's default
	// (DISCARD ALL, run in session mode only).
	ResetQuery string
}

// Bouncer is a PgBouncer process in front of one Postgres server, started by
// StartBouncer and owned by this process.
type Bouncer struct {
	url     string
	dir     string
	logPath string
	errPath string // PgBouncer's stderr, for errors before its logfile opens
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited and been reaped

	// The watchdog kills PgBouncer and removes dir if this process dies
	// without calling Stop; nil when sh was not to be had.
	watchdog       *exec.Cmd
	watchdogPipe   *os.File
	watchdogExited chan struct{}

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
	finalLog string // the log as Stop found it, for Log after the dir is gone
	stopped  bool
}

// StartBouncer starts PgBouncer in front of the server that target (a
// postgres URL or keyword/value DSN, e.g. from NewDatabase) points at, and
// waits until a connection through it answers SELECT 1. Every database name
// goes through to the same server, so URL works for target's database and
// any other. It returns an error wrapping ErrNoPgBouncer when there is no
// pgbouncer binary, and one carrying PgBouncer's log when it exits early.
//
// PgBouncer refuses to run as root, so when we are root it runs as the same
// unprivileged account as the initdb clusters. Stop stops it; if this
// process dies first, a small watchdog process does.
func StartBouncer(ctx context.Context, target string, cfg BouncerConfig) (_ *Bouncer, err error) {
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tc, err := pgx.ParseConfig(target)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse pgbouncer target: %w", err)
	}
	if err := checkIniValue("host", tc.Host); err != nil {
		return nil, err
	}
	if err := checkIniValue("user", tc.User); err != nil {
		return nil, err
	}
	as, err := unprivilegedAccount()
	if err != nil {
		return nil, fmt.Errorf("pgtest: pgbouncer: %w", err)
	}
	dir, err := bouncerDir(as, tc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()

	// Another process may take the free port before PgBouncer binds it;
	// then we try another.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		b, err := startBouncerOnce(ctx, bin, as, dir, target, tc, cfg, port)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return nil, err
		}
	}
}

// bouncerDir creates PgBouncer's directory, readable by as, with the user
// list in it.
func bouncerDir(as *account, tc *pgx.ConnConfig) (dir string, err error) {
	dir, err = os.MkdirTemp(as.tempRoot(), "kern-pgbouncer-")
	if err != nil {
		return "", fmt.Errorf("pgtest: create pgbouncer dir: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if err := as.chown(dir); err != nil {
		return "", fmt.Errorf("pgtest: hand pgbouncer dir to %s: %w", as.name, err)
	}
	// With auth_type = trust PgBouncer lets clients in without a password,
	// but still logs in to the server with the one listed here.
	users := quoteUserlist(tc.User) + " " + quoteUserlist(tc.Password) + "\n"
	if err := writeOwned(as, filepath.Join(dir, "users.txt"), users); err != nil {
		return "", err
	}
	return dir, nil
}

// errPortTaken is startBouncerOnce's way of asking for another port.
var errPortTaken = errors.New("pgbouncer's port was taken")

func startBouncerOnce(ctx context.Context, bin string, as *account, dir, target string, tc *pgx.ConnConfig, cfg BouncerConfig, port int) (*Bouncer, error) {
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := writeOwned(as, ini, bouncerIni(dir, tc, cfg, port)); err != nil {
		return nil, err
	}
	u, err := bouncerURL(target, port)
	if err != nil {
		return nil, err
	}
	b := &Bouncer{
		url:     u,
		dir:     dir,
		logPath: filepath.Join(dir, "pgbouncer.log"),
		errPath: filepath.Join(dir, "pgbouncer.stderr"),
		exited:  make(chan struct{}),
	}
	// A fresh log per attempt, so a retry's error is about itself.
	_ = os.Remove(b.logPath)
	stderr, err := os.Create(b.errPath)
	if err != nil {
		return nil, fmt.Errorf("pgtest: pgbouncer stderr: %w", err)
	}
	defer stderr.Close()
	// -q: the logfile has everything; stderr only catches what comes before
	// it is opened. No -d: a foreground child can be waited for, and a crash
	// shows up in Alive.
	b.cmd = exec.Command(bin, "-q", ini)
	b.cmd.Dir = dir // the unprivileged account may not be able to read our cwd
	b.cmd.Env = childEnv()
	b.cmd.Stdout, b.cmd.Stderr = stderr, stderr
	b.cmd.SysProcAttr = as.sysProcAttr(true)
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: start pgbouncer: %w", err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	b.watchdog, b.watchdogPipe, b.watchdogExited, _ = spawnWatchdog(bouncerWatchdogScript, strconv.Itoa(b.cmd.Process.Pid), dir)

	if err := b.waitReady(ctx); err != nil {
		b.kill()
		if strings.Contains(b.readLog(), "Address already in use") {
			return nil, fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, err
	}
	return b, nil
}

// bouncerWatchdogScript runs when this process dies without stopping its
// Bouncer: $1 is PgBouncer's pid (and process group), $2 its dir.
// (No "--" before the group: dash's kill rejects it.)
const bouncerWatchdogScript = `read -r _
kill -KILL "-$1" 2>/dev/null
rm -rf "$2"
`

// waitReady polls until SELECT 1 through PgBouncer works, PgBouncer exits,
// or bouncerReadyTimeout passes.
func (b *Bouncer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, bouncerReadyTimeout)
	defer cancel()
	// pgxpool's parser: a target URL may carry pgxpool's own parameters
	// (pool_max_conns), which pgx alone would send PgBouncer as startup
	// parameters, and PgBouncer refuses those.
	pc, err := pgxpool.ParseConfig(b.url)
	if err != nil {
		return fmt.Errorf("pgtest: parse pgbouncer url: %w", err)
	}
	cc := pc.ConnConfig
	// The simple protocol leaves no prepared statement on the server
	// connection, where in transaction mode it would trip the next client.
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cc.ConnectTimeout = 2 * time.Second
	var lastErr error
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("pgtest: pgbouncer exited before it answered (%v)\npgbouncer log:\n%s", b.cmd.ProcessState, tail([]byte(b.readLog())))
		default:
		}
		if lastErr = b.probe(ctx, cc); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: pgbouncer did not answer SELECT 1 within %v: %w\npgbouncer log:\n%s", bouncerReadyTimeout, errors.Join(lastErr, ctx.Err()), tail([]byte(b.readLog())))
		case <-b.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probe runs SELECT 1 through PgBouncer, giving up as soon as PgBouncer
// exits: whatever holds its port then (when it could not bind) may accept
// the connection and never answer.
func (b *Bouncer) probe(ctx context.Context, cc *pgx.ConnConfig) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// URL is target's URL (same user, database and options) pointed at
// PgBouncer, with sslmode=disable because PgBouncer is not set up for TLS
// on the client side.
func (b *Bouncer) URL() string { return b.url }

// PID is PgBouncer's process id.
func (b *Bouncer) PID() int { return b.cmd.Process.Pid }

// Alive reports whether PgBouncer is still running. It is false after Stop,
// and also after PgBouncer crashed, which tests should check for.
func (b *Bouncer) Alive() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// Log is PgBouncer's log so far (after Stop: as Stop found it), for tests
// to look for crashes, cancel requests or closed server connections.
func (b *Bouncer) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return b.finalLog
	}
	return b.readLog()
}

// readLog is the logfile plus whatever reached stderr.
func (b *Bouncer) readLog() string {
	log, _ := os.ReadFile(b.logPath)
	if extra, _ := os.ReadFile(b.errPath); len(extra) > 0 {
		log = append(log, extra...)
	}
	return string(log)
}

// Stop stops PgBouncer (SIGTERM, then SIGKILL after a few seconds) and
// removes its directory. It is safe to call more than once.
func (b *Bouncer) Stop() error {
	b.stopOnce.Do(func() {
		b.stopErr = b.kill()
		b.mu.Lock()
		b.finalLog, b.stopped = b.readLog(), true
		b.mu.Unlock()
		if err := os.RemoveAll(b.dir); err != nil {
			b.stopErr = errors.Join(b.stopErr, fmt.Errorf("pgtest: remove pgbouncer dir: %w", err))
		}
	})
	return b.stopErr
}

// kill ends PgBouncer and its watchdog and waits for both.
func (b *Bouncer) kill() error {
	if b.watchdog != nil {
		// We clean up ourselves now; the watchdog is only for when we die.
		_ = b.watchdog.Process.Kill()
		<-b.watchdogExited
		_ = b.watchdogPipe.Close()
		b.watchdog = nil
	}
	select {
	case <-b.exited:
		// Already gone (crashed, or failed to start): signalling its pid
		// could reach an unrelated process that reused it.
		return nil
	default:
	}
	if err := stopGroup(b.cmd.Process, false); err != nil {
		return fmt.Errorf("pgtest: stop pgbouncer: %w", err)
	}
	select {
	case <-b.exited:
		return nil
	case <-time.After(bouncerStopTimeout):
	}
	if err := stopGroup(b.cmd.Process, true); err != nil {
		return fmt.Errorf("pgtest: kill pgbouncer: %w", err)
	}
	<-b.exited
	return nil
}

// NewBouncer starts PgBouncer in front of target for t (see StartBouncer)
// and stops it in t's cleanup, logging the tail of its log if t failed. It
// skips t when no pgbouncer binary is installed. Call it after NewDatabase,
// so that PgBouncer is stopped before the database is dropped.
func NewBouncer(t testing.TB, target string, cfg BouncerConfig) *Bouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := StartBouncer(ctx, target, cfg)
	if errors.Is(err, ErrNoPgBouncer) {
		t.Skipf("pgtest: %v (Debian/Ubuntu: apt-get install pgbouncer)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgbouncer log (tail):\n%s", tail([]byte(b.Log())))
		}
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range pgbouncerPaths {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w on PATH or in %s", ErrNoPgBouncer, strings.Join(pgbouncerPaths, ", "))
}
