package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// templates are this process's migrated template databases, one per key.
type templates struct {
	mu     sync.Mutex
	byKey  map[string]*template
	copyMu sync.Mutex // CREATE DATABASE ... TEMPLATE conflicts when run concurrently on one template
}

type template struct {
	ready chan struct{} // closed once name/err are set
	name  string
	err   error
}

// migratedDatabase creates a database copied from this process's template
// for key, running migrate once per key to build that template. migrate gets
// the template's URL and must close every connection it opens.
func (s *Server) migratedDatabase(ctx context.Context, prefix, key string, migrate func(ctx context.Context, url string) error) (string, error) {
	tmpl, err := s.template(ctx, key, migrate)
	if err != nil {
		return "", err
	}
	s.templates.copyMu.Lock()
	defer s.templates.copyMu.Unlock()
	dbURL, err := s.createDatabase(ctx, prefix, tmpl)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" {
		return "", fmt.Errorf("%w (is the migrate func for %q leaving a connection open?)", err, key)
	}
	return dbURL, err
}

// template returns the name of key's template, building it on first use.
// Concurrent callers wait for the one that builds it and share its error.
func (s *Server) template(ctx context.Context, key string, migrate func(ctx context.Context, url string) error) (string, error) {
	ts := &s.templates
	ts.mu.Lock()
	t, ok := ts.byKey[key]
	if !ok {
		if ts.byKey == nil {
			ts.byKey = map[string]*template{}
		}
		t = &template{ready: make(chan struct{})}
		ts.byKey[key] = t
	}
	ts.mu.Unlock()

	if ok {
		select {
		case <-t.ready:
			return t.name, t.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	defer close(t.ready)
	t.name, t.err = s.buildTemplate(ctx, key, migrate)
	return t.name, t.err
}

func (s *Server) buildTemplate(ctx context.Context, key string, migrate func(ctx context.Context, url string) error) (string, error) {
	prefix := fmt.Sprintf("kern_tmpl_%s_%d", keyPart(key), os.Getpid())
	tmplURL, err := s.createDatabase(ctx, prefix, "")
	if err != nil {
		return "", fmt.Errorf("pgtest: template %q: %w", key, err)
	}
	if err := migrate(ctx, tmplURL); err != nil {
		_ = s.DropDatabase(context.WithoutCancel(ctx), tmplURL)
		return "", fmt.Errorf("pgtest: migrate template %q: %w", key, err)
	}
	return databaseName(tmplURL)
}

// dropTemplates drops every template this process built. Only templates on
// a server that outlives us (DATABASE_URL) need it.
func (s *Server) dropTemplates(ctx context.Context) error {
	ts := &s.templates
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var errs []error
	for key, t := range ts.byKey {
		select {
		case <-t.ready:
		default:
			continue // still being built by a goroutine that outlived its test
		}
		if t.err == nil {
			errs = append(errs, s.dropByName(ctx, t.name))
		}
		delete(ts.byKey, key)
	}
	return errors.Join(errs...)
}

var notNameChar = regexp.MustCompile(`[^a-z0-9_]+`)

// keyPart makes key safe and short enough for a database name: the rest of
// the template name takes up to 41 of Postgres' 63 bytes.
func keyPart(key string) string {
	k := strings.Trim(notNameChar.ReplaceAllString(strings.ToLower(key), "_"), "_")
	if k == "" {
		k = "x"
	}
	if len(k) > 20 {
		k = k[:20]
	}
	return k
}
