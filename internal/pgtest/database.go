package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// staleAge is how old a kern_test_/kern_tmpl_ database on a shared
// DATABASE_URL server must be before we assume its run was killed.
const staleAge = 2 * time.Hour

// stalePrefixes are the databases this package names; dropStale never
// touches anything else.
var stalePrefixes = []string{"kern_test_", "kern_tmpl_"}

// CreateDatabase creates an empty database named <prefix>_<unixsec>_<random>
// and returns its URL. The time in the name lets a later run recognise
// leftovers.
func (s *Server) CreateDatabase(ctx context.Context, prefix string) (string, error) {
	return s.createDatabase(ctx, prefix, "")
}

// DropDatabase drops the database url points at, disconnecting anyone still
// connected. Dropping one that is already gone is not an error.
func (s *Server) DropDatabase(ctx context.Context, dbURL string) error {
	name, err := databaseName(dbURL)
	if err != nil {
		return err
	}
	return s.dropByName(ctx, name)
}

func databaseName(dbURL string) (string, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return "", fmt.Errorf("pgtest: parse database url: %w", err)
	}
	return cfg.Database, nil
}

// createDatabase copies template (template1 when empty) into a new database.
func (s *Server) createDatabase(ctx context.Context, prefix, template string) (string, error) {
	name := fmt.Sprintf("%s_%d_%08x", prefix, time.Now().Unix(), rand.Uint32())
	if len(name) > 63 {
		return "", fmt.Errorf("pgtest: database name %q is longer than Postgres' 63 bytes; use a shorter prefix", name)
	}
	dbURL, err := databaseURL(s.AdminURL, name)
	if err != nil {
		return "", err
	}
	stmt := "CREATE DATABASE " + ident(name)
	if template != "" {
		stmt += " TEMPLATE " + ident(template)
	}
	if s.fileCopy {
		stmt += " STRATEGY FILE_COPY"
	}
	if err := s.exec(ctx, stmt); err != nil {
		return "", fmt.Errorf("pgtest: create database: %w", err)
	}
	return dbURL, nil
}

func (s *Server) dropByName(ctx context.Context, name string) error {
	if admin, err := pgx.ParseConfig(s.AdminURL); err == nil && admin.Database == name {
		return fmt.Errorf("pgtest: refusing to drop the admin database %q", name)
	}
	stmts := []string{"DROP DATABASE IF EXISTS " + ident(name) + " WITH (FORCE)"}
	if s.version < 130000 {
		// No WITH (FORCE) before 13: kick connections out by hand.
		stmts = []string{
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = " + literal(name),
			"DROP DATABASE IF EXISTS " + ident(name),
		}
	}
	if err := s.exec(ctx, stmts...); err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	return nil
}

// dropStale drops databases of killed runs; names carry their creation time
// because pg_database does not record one.
func (s *Server) dropStale(ctx context.Context) error {
	names, err := s.databaseNames(ctx)
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-staleAge).Unix()
	for _, name := range names {
		if !hasAnyPrefix(name, stalePrefixes) {
			continue
		}
		created, ok := createdAt(name)
		if !ok || created > cutoff {
			continue
		}
		if err := s.dropByName(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) databaseNames(ctx context.Context) ([]string, error) {
	conn, err := pgx.Connect(ctx, s.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return names, nil
}

// createdAt reads the unix seconds that every name we generate carries as
// its second-to-last _-separated field.
func createdAt(name string) (int64, bool) {
	fields := strings.Split(name, "_")
	if len(fields) < 3 {
		return 0, false
	}
	sec, err := strconv.ParseInt(fields[len(fields)-2], 10, 64)
	return sec, err == nil && sec > 0
}

// exec runs statements on a fresh admin connection, retrying while a
// database involved is briefly in use: a template whose last user is still
// disconnecting, or template1 being copied by another session.
func (s *Server) exec(ctx context.Context, stmts ...string) error {
	conn, err := pgx.Connect(ctx, s.AdminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, stmt := range stmts {
		if err := retryInUse(ctx, func() error {
			_, err := conn.Exec(ctx, stmt)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// retryInUse retries f on SQLSTATE 55006 (object_in_use) for a few seconds.
func retryInUse(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	wait := 10 * time.Millisecond
	for {
		err := f()
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// databaseURL points adminURL at database name, keeping host, credentials
// and options. It accepts both URL and keyword/value forms.
func databaseURL(adminURL, name string) (string, error) {
	if strings.HasPrefix(adminURL, "postgres://") || strings.HasPrefix(adminURL, "postgresql://") {
		u, err := url.Parse(adminURL)
		if err != nil {
			return "", fmt.Errorf("pgtest: parse admin url: %w", err)
		}
		u.Path, u.RawPath = "/"+name, ""
		// libpq lets ?dbname= override the path; it must not win over ours.
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	if _, err := pgx.ParseConfig(adminURL); err != nil {
		return "", fmt.Errorf("pgtest: parse admin dsn: %w", err)
	}
	return setKeyword(adminURL, "dbname", name), nil
}

// setKeyword replaces (or adds) key in a keyword/value DSN.
func setKeyword(dsn, key, value string) string {
	var parts []string
	for rest := strings.TrimSpace(dsn); rest != ""; rest = strings.TrimLeft(rest, " \t\n\r") {
		pair, r := nextPair(rest)
		rest = r
		if k, _, _ := strings.Cut(pair, "="); strings.TrimSpace(k) == key {
			continue
		}
		parts = append(parts, pair)
	}
	quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value) + "'"
	return strings.Join(append(parts, key+"="+quoted), " ")
}

// nextPair splits off one key=value pair, honouring single quotes and
// backslash escapes in the value.
func nextPair(s string) (pair, rest string) {
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return s, ""
	}
	i := eq + 1
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i < len(s) && s[i] == '\'' {
		for i++; i < len(s) && s[i] != '\''; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		i = min(i+1, len(s))
	} else {
		for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		i = min(i, len(s))
	}
	return s[:i], s[i:]
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
