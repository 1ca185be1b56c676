package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoLocalPostgres means no initdb and pg_ctl were found, so StartLocal
// cannot build a cluster; tests that need one should t.Skip.
var ErrNoLocalPostgres = errors.New("no local PostgreSQL server binaries")

// ErrCannotRestart means Restart was called on a server this package does
// not control (DATABASE_URL or testcontainers).
var ErrCannotRestart = errors.New("pgtest: only a StartLocal (initdb) server can be restarted")

const (
	// portRetryFor is how long Restart keeps trying to bind the old port
	// when something else briefly holds it.
	portRetryFor = 5 * time.Second
	// readyTimeout bounds the wait for a restarted server to take
	// connections, on top of pg_ctl -w.
	readyTimeout = 30 * time.Second
)

// StartLocal always builds a fresh throwaway initdb cluster, ignoring
// DATABASE_URL and Docker, for tests that must control the server itself
// (see Restart). The caller must Stop it; if the process dies first, the
// watchdog removes it. When initdb or pg_ctl is missing the error wraps
// ErrNoLocalPostgres:
//
//	srv, err := pgtest.StartLocal(ctx)
//	if errors.Is(err, pgtest.ErrNoLocalPostgres) {
//		t.Skip(err)
//	}
func StartLocal(ctx context.Context) (*Server, error) {
	s, err := startInitdb(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgtest: start local cluster: %w", err)
	}
	return s, nil
}

// StartStock builds a fresh throwaway initdb cluster like StartLocal, but
// one that runs with Postgres's default settings, for figures that must hold
// on the server users run: fsync, synchronous_commit and full_page_writes
// on, the default shared_buffers (128MB), max_wal_size and wal_sync_method.
// Only what it takes to run beside other clusters is set: listen_addresses
// 127.0.0.1, a free port, its own unix socket dir and max_connections (500,
// or 100 where the OS lacks the semaphores), as for StartLocal.
//
// Its data directory is on disk, not in /dev/shm: under TMPDIR, or
// /var/tmp when TMPDIR is a tmpfs (see DataDir), so every commit waits for
// a real WAL flush. Its Kind is KindInitdbStock. CREATE DATABASE uses
// Postgres's default WAL_LOG strategy there (FILE_COPY, which pgtest
// picks with fsync off, would fsync every copied file). Stop, the
// watchdog, Restart and ErrNoLocalPostgres work as for StartLocal.
func StartStock(ctx context.Context) (*Server, error) {
	s, err := startCluster(ctx, stockCluster)
	if err != nil {
		return nil, fmt.Errorf("pgtest: start stock cluster: %w", err)
	}
	return s, nil
}

// Restart simulates a Postgres outage on a StartLocal (or StartStock) server: it stops the
// postmaster with pg_ctl stop -m fast, which ends every client connection
// (clients see FATAL 57P01 or a closed connection), keeps it down for down,
// then starts it again on the same port and data directory and returns once
// it accepts connections. Data committed before the restart survives.
//
// It is safe to call while clients hold or open connections. If ctx ends
// while the server is down, Restart still starts it again before returning
// ctx's error, so a cancelled Restart does not leave the server down. Stop
// may be called during the down period; Restart then returns an error.
// Other kinds of server give an error wrapping ErrCannotRestart.
func (s *Server) Restart(ctx context.Context, down time.Duration) error {
	c := s.cluster
	if c == nil {
		return fmt.Errorf("%w (this server is %s)", ErrCannotRestart, s.Kind)
	}
	// The watchdog needs no update: it reads postmaster.pid only once this
	// process has died, so it finds whichever postmaster is running then.
	c.restartMu.Lock()
	defer c.restartMu.Unlock()
	if err := c.halt(ctx); err != nil {
		return fmt.Errorf("pgtest: restart: stop: %w", err)
	}

	var ctxErr error
	timer := time.NewTimer(down)
	select {
	case <-timer.C:
	case <-c.done: // resume reports it
		timer.Stop()
	case <-ctx.Done():
		timer.Stop()
		ctxErr = ctx.Err()
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
	}
	if err := c.resume(ctx); err != nil {
		return errors.Join(fmt.Errorf("pgtest: restart: start: %w", err), ctxErr)
	}
	if err := s.waitReady(ctx); err != nil {
		return errors.Join(fmt.Errorf("pgtest: restart: %w", err), ctxErr)
	}
	if ctxErr != nil {
		return fmt.Errorf("pgtest: restart cut short (server is up again): %w", ctxErr)
	}
	return nil
}

// halt stops the postmaster, ending client connections, and waits for it
// to exit. A server that is already down (an earlier failed restart) is
// left as it is.
func (c *cluster) halt(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("server already stopped")
	}
	if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return c.run(ctx, "pg_ctl", false, "-D", c.data, "-m", "fast", "-w", "-t", "60", "stop")
}

// resume starts the postmaster on its old port. Postgres binds with
// SO_REUSEADDR, so connections left in TIME_WAIT do not block it; only
// another process listening there does, and then we retry for a while.
func (c *cluster) resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("server was stopped while it was down")
	}
	deadline := time.Now().Add(portRetryFor)
	for {
		log, err := c.pgCtlStart(ctx)
		if err == nil {
			return nil
		}
		if !bytes.Contains(log, []byte("already in use")) {
			return fmt.Errorf("%w\npostgres.log:\n%s", err, tail(log))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d was taken by another process while the server was down: %w", c.port, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (port %d in use)", ctx.Err(), c.port)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitReady returns once a client can connect and run a query. pg_ctl -w
// normally guarantees that already; this makes sure over TCP.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.AdminURL)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not accepting connections after restart: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
