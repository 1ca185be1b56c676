package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Server kinds, reported in Server.Kind.
const (
	KindEnv            = "env"
	KindTestcontainers = "testcontainers"
	KindInitdb         = "initdb"
	// KindInitdbStock is a StartStock cluster: Postgres's default settings,
	// data on disk.
	KindInitdbStock = "initdb (stock settings: fsync on)"
)

// Server is a Postgres server reachable at AdminURL. Stop stops what this
// process started (it is a no-op for a DATABASE_URL server).
type Server struct {
	// AdminURL connects as a role that may CREATE DATABASE, to a database we
	// never drop.
	AdminURL string
	// Kind says where the server came from: KindEnv, KindTestcontainers,
	// KindInitdb or (StartStock) KindInitdbStock.
	Kind string

	// version is server_version_num; it gates DROP DATABASE ... WITH
	// (FORCE) (13+) for older DATABASE_URL servers.
	version int
	// fileCopy says CREATE DATABASE should use STRATEGY FILE_COPY (15+).
	// With fsync off it beats the default WAL_LOG (two cheap checkpoints
	// instead of WAL-logging every page); with fsync on it is 2-3x slower
	// because it fsyncs every copied file.
	fileCopy bool

	stop     func(ctx context.Context) error
	stopOnce sync.Once
	stopErr  error
	// cluster is set for KindInitdb and KindInitdbStock servers, the only
	// ones Restart handles.
	cluster *cluster

	templates templates
}

// Stop stops the server if this process started it, and releases its
// resources. It is safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			s.stopErr = s.stop(ctx)
		}
	})
	return s.stopErr
}

// Start finds or starts a server: DATABASE_URL, then a testcontainers
// container when a Docker engine answers, then a local initdb cluster. The
// error, when none works, says how to get one.
//
// On a DATABASE_URL server, Start also drops kern_test_/kern_tmpl_ databases
// older than two hours, left behind by runs that were killed.
func Start(ctx context.Context) (*Server, error) {
	if url := os.Getenv("DATABASE_URL"); url != "" {
		// An explicit URL that does not work is a mistake to report, not a
		// reason to quietly test against something else.
		s := &Server{AdminURL: url, Kind: KindEnv}
		if err := s.probe(ctx); err != nil {
			return nil, fmt.Errorf("pgtest: DATABASE_URL is set but unusable: %w", err)
		}
		if err := s.dropStale(ctx); err != nil {
			return nil, fmt.Errorf("pgtest: DATABASE_URL: %w", err)
		}
		return s, nil
	}

	var reasons []error
	if err := dockerEngine(ctx); err != nil {
		reasons = append(reasons, fmt.Errorf("docker: %w", err))
	} else {
		s, err := startContainer(ctx)
		if err == nil {
			return s, nil
		}
		// An engine that answers but cannot run the image (offline, no pull
		// rights) should not stop us from trying a local cluster.
		reasons = append(reasons, fmt.Errorf("testcontainers: %w", err))
	}

	s, err := startInitdb(ctx)
	if err == nil {
		return s, nil
	}
	reasons = append(reasons, fmt.Errorf("initdb: %w", err))
	return nil, noServerError(reasons)
}

// noServerError explains every way to get a server, because the person
// reading it usually just cloned the repository and ran go test.
func noServerError(reasons []error) error {
	return fmt.Errorf(`pgtest: no Postgres server available for tests; do one of:
  - set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/postgres?sslmode=disable
    (a server where that role may CREATE DATABASE; it is never dropped)
  - install the PostgreSQL server so initdb and pg_ctl are on PATH or in
    /usr/lib/postgresql/*/bin (Debian/Ubuntu: apt-get install postgresql;
    macOS: brew install postgresql@16)
  - start a Docker engine (testcontainers then runs %s; unset KERN_TEST_NO_DOCKER)
what was tried: %w`, containerImage, errors.Join(reasons...))
}

// probe checks that the server answers and records its version.
func (s *Server) probe(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.AdminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var fsync string
	if err := conn.QueryRow(ctx,
		"SELECT current_setting('server_version_num')::int, current_setting('fsync')",
	).Scan(&s.version, &fsync); err != nil {
		return fmt.Errorf("read server settings: %w", err)
	}
	s.fileCopy = s.version >= 150000 && fsync == "off"
	return nil
}

// PostmasterPID is the process id of a server this process started from
// initdb, so a benchmark can read its CPU time; false for other kinds.
func (s *Server) PostmasterPID() (int, bool) {
	if s.cluster == nil {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(s.cluster.data, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	return pid, err == nil
}

// DataDir is the data directory of a server this process started from
// initdb (StartLocal, StartStock, or Start without DATABASE_URL or Docker);
// false for other kinds. It is deleted by Stop.
func (s *Server) DataDir() (string, bool) {
	if s.cluster == nil {
		return "", false
	}
	return s.cluster.data, true
}
