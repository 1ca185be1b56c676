package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// serverSettings trade durability for speed: the cluster is thrown away.
// max_wal_size is capped because the data dir may live in RAM.
// max_connections is passed separately so it can be lowered where the OS
// cannot give 500 connections' worth of semaphores (stock macOS).
const serverSettings = `
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
max_wal_size = 256MB
`

// binGlobs are where distributions put versioned Postgres binaries that are
// not on PATH (Debian/Ubuntu, RHEL, Homebrew).
var binGlobs = []string{
	"/usr/lib/postgresql/*/bin/initdb",
	"/usr/pgsql-*/bin/initdb",
	"/opt/homebrew/opt/postgresql@*/bin/initdb",
	"/usr/local/opt/postgresql@*/bin/initdb",
	"/usr/local/pgsql/bin/initdb",
}

// cluster is a throwaway Postgres cluster living entirely in dir.
type cluster struct {
	bin  string // directory holding initdb, pg_ctl and postgres
	as   *account
	dir  string // temp dir: data dir, unix socket, logs
	data string

	// port and maxConns are what the postmaster was started with, so that
	// Restart brings it back on the same address with the same limits.
	port, maxConns int

	// mu serialises stop with the stop and start halves of restart; it is
	// not held while a restart keeps the server down, so Stop need not wait
	// that out. restartMu serialises restarts.
	mu        sync.Mutex
	restartMu sync.Mutex
	stopped   bool
	done      chan struct{} // closed by stop, to cut a restart's downtime short

	watchdog     *exec.Cmd
	watchdogPipe *os.File
	// watchdogExited is closed once the watchdog has exited and been
	// reaped, so its exit can be waited for (by stop, and by tests checking
	// that it fires only when it should) instead of guessed at.
	watchdogExited chan struct{}
}

// stockSettings are only what it takes to run a throwaway cluster next to
// others: its own address (the port and max_connections come on the
// command line) and, appended by startCluster, its own unix socket dir.
// Everything else — fsync, synchronous_commit, full_page_writes,
// shared_buffers, max_wal_size, wal_sync_method — stays at what initdb
// writes and Postgres defaults to, as on a packaged server.
const stockSettings = `
listen_addresses = '127.0.0.1'
`

// clusterKind is what differs between the throwaway clusters pgtest builds.
type clusterKind struct {
	kind     string                  // Server.Kind
	settings string                  // appended to postgresql.conf
	root     func(a *account) string // where the cluster dir is created
	initdb   []string                // extra initdb flags
}

// throwawayCluster is fast and not durable: tests and the offline demo.
var throwawayCluster = clusterKind{
	kind:     KindInitdb,
	settings: serverSettings,
	root:     (*account).tempRoot,
	// The cluster is thrown away: nothing initdb writes needs to reach disk.
	initdb: []string{"--no-sync"},
}

// stockCluster is durable the way a default install is: fsync on, data on
// disk (see StartStock).
var stockCluster = clusterKind{
	kind:     KindInitdbStock,
	settings: stockSettings,
	root:     (*account).diskTempRoot,
	// Without --no-sync initdb syncs what it wrote, as a packaged install
	// does, so none of it is still being written back while the caller
	// measures.
}

// startInitdb builds and starts a fresh throwaway (fsync off) cluster.
func startInitdb(ctx context.Context) (*Server, error) {
	return startCluster(ctx, throwawayCluster)
}

// startCluster builds and starts a fresh cluster of kind k in a new temp
// dir, so a cluster orphaned by a killed run can never get in the way of
// this one.
func startCluster(ctx context.Context, k clusterKind) (s *Server, err error) {
	bin, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	as, err := unprivilegedAccount()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(k.root(as), "kern-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	c := &cluster{bin: bin, as: as, dir: dir, data: filepath.Join(dir, "data"), done: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = c.stop(context.WithoutCancel(ctx))
		}
	}()
	if err := as.chown(dir); err != nil {
		return nil, fmt.Errorf("hand cluster dir to %s: %w", as.name, err)
	}

	args := append([]string{"-D", c.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"}, k.initdb...)
	if err := c.run(ctx, "initdb", false, args...); err != nil {
		return nil, err
	}
	conf := k.settings + "unix_socket_directories = " + quoteConf(dir) + "\n"
	if err := appendFile(filepath.Join(c.data, "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	c.startWatchdog()

	s = &Server{
		AdminURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port),
		Kind:     k.kind,
		stop:     c.stop,
		cluster:  c,
	}
	if err := s.probe(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs pg_ctl start on a free port, retrying when another process
// grabbed the port between our probe and the postmaster's bind.
func (c *cluster) start(ctx context.Context) error {
	c.maxConns = 500
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return err
		}
		var log []byte
		log, err = c.pgCtlStart(ctx)
		switch {
		case err == nil:
			return nil
		case bytes.Contains(log, []byte("already in use")):
		case bytes.Contains(log, []byte("semaphore")) && c.maxConns > 100:
			c.maxConns = 100
		default:
			return fmt.Errorf("%w\npostgres.log:\n%s", err, tail(log))
		}
	}
	return err
}

// pgCtlStart starts the postmaster on c.port and waits until it accepts
// connections. On failure it returns what the attempt added to postgres.log.
func (c *cluster) pgCtlStart(ctx context.Context) ([]byte, error) {
	logPath := filepath.Join(c.dir, "postgres.log")
	var offset int64
	if fi, err := os.Stat(logPath); err == nil {
		offset = fi.Size()
	}
	err := c.run(ctx, "pg_ctl", true,
		"-D", c.data, "-l", logPath, "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -c max_connections=%d", c.port, c.maxConns),
		"start",
	)
	if err == nil {
		return nil, nil
	}
	log, _ := os.ReadFile(logPath)
	if int64(len(log)) >= offset {
		log = log[offset:]
	}
	return log, err
}

// stop shuts the cluster down hard and deletes it; nothing in it is worth a
// clean shutdown.
func (c *cluster) stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		close(c.done)
	}
	if c.watchdog != nil {
		// We clean up ourselves now; the watchdog is only for when we die.
		_ = c.watchdog.Process.Kill()
		<-c.watchdogExited
		_ = c.watchdogPipe.Close()
		c.watchdog = nil
	}
	var stopErr error
	if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err == nil {
		stopErr = c.run(ctx, "pg_ctl", false, "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	// Even if pg_ctl failed, removing the dir makes the postmaster notice its
	// lock file is gone and shut itself down.
	if err := os.RemoveAll(c.dir); err != nil {
		stopErr = errors.Join(stopErr, fmt.Errorf("remove cluster dir: %w", err))
	}
	return stopErr
}

// watchdogScript waits for EOF on stdin, which the kernel delivers when this
// process dies (it holds the only write end), then kills and deletes the
// cluster so killed test runs do not leave postmasters behind.
const watchdogScript = `read -r _
pidfile="$1/postmaster.pid"
if [ -f "$pidfile" ]; then
	pid=$(head -n 1 "$pidfile")
	kill -QUIT "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$2"
`

// startWatchdog is best effort: without sh we only lose crash cleanup.
func (c *cluster) startWatchdog() {
	cmd, pipe, exited, ok := spawnWatchdog(watchdogScript, c.data, c.dir)
	if ok {
		c.watchdog, c.watchdogPipe, c.watchdogExited = cmd, pipe, exited
	}
}

// spawnWatchdog runs script under sh, as ourselves, with args as $1, $2, ….
// Its stdin is a pipe whose only write end is returned, so its `read` sees
// EOF exactly when this process dies (or closes pipe). exited is closed
// once it has exited and been reaped. ok is false when sh or a pipe is not
// to be had: the caller then only loses its crash cleanup.
func spawnWatchdog(script string, args ...string) (cmd *exec.Cmd, pipe *os.File, exited chan struct{}, ok bool) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return nil, nil, nil, false
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, false
	}
	defer r.Close()
	cmd = exec.Command(sh, append([]string{"-c", script, "kern-pgtest-watchdog"}, args...)...)
	cmd.Stdin = r
	// Own process group so the Ctrl-C that kills go test does not kill the
	// watchdog before it has cleaned up; stdout/stderr stay /dev/null so go
	// test does not wait on it.
	cmd.SysProcAttr = (*account)(nil).sysProcAttr(true)
	if err := cmd.Start(); err != nil {
		_ = w.Close()
		return nil, nil, nil, false
	}
	exited = make(chan struct{})
	go func() {
		// Reap it as soon as it exits rather than only when it is stopped,
		// so that its exit is an event others can wait on.
		_ = cmd.Wait()
		close(exited)
	}()
	return cmd, w, exited, true
}

// run runs one of the Postgres binaries as the cluster's account. Output goes
// to a file, not a pipe: pg_ctl start leaves a postmaster that would hold a
// pipe open and make Wait hang.
func (c *cluster) run(ctx context.Context, name string, newGroup bool, args ...string) error {
	out, err := os.CreateTemp(c.dir, name+"-*.out")
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer func() {
		out.Close()
		os.Remove(out.Name())
	}()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir // the unprivileged user may not be able to read our cwd
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = c.as.sysProcAttr(newGroup)
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(msg))
	}
	return nil
}

// childEnv drops PG* variables, which would point pg_ctl and friends at some
// other cluster, and pins the C locale so messages are English.
func childEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=")
	})
	return append(env, "LC_ALL=C")
}

var binVersion = regexp.MustCompile(`(\d+)/bin/initdb$`)

// findPostgresBin returns a directory that has both initdb and pg_ctl,
// preferring PATH, then the newest versioned install.
func findPostgresBin() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, p)
	}
	for _, g := range binGlobs {
		matches, _ := filepath.Glob(g)
		slices.SortFunc(matches, func(a, b string) int { return versionOf(b) - versionOf(a) })
		candidates = append(candidates, matches...)
	}
	for _, p := range candidates {
		// PATH often has symlinks (or wrappers) in a directory without the
		// other binaries; the real directory has all of them.
		dirs := []string{filepath.Dir(p)}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append([]string{filepath.Dir(real)}, dirs...)
		}
		for _, d := range dirs {
			if isExecutable(filepath.Join(d, "pg_ctl")) && isExecutable(filepath.Join(d, "initdb")) {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("%w: initdb and pg_ctl not found on PATH or in %s", ErrNoLocalPostgres, strings.Join(binGlobs, ", "))
}

func versionOf(path string) int {
	m := binVersion.FindStringSubmatch(path)
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// quoteConf quotes a postgresql.conf string value.
func quoteConf(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// tail keeps error messages readable when a log is long.
func tail(b []byte) string {
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
