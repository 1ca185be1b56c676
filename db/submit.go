package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kern-go/kern/run"
)

// SubmitParams describe a new run. RunID, AgentName and Input are required.
type SubmitParams struct {
	RunID     string
	SessionID string
	AgentName string
	Name      string
	Input     string
	Metadata  map[string]any
	// Timeout bounds the run's execution; 0 means the worker's default.
	Timeout time.Duration
	// Enqueue inserts the River job in the same transaction as the row: a
	// background run. Without it the caller executes the run itself.
	Enqueue bool
	// IdempotencyKey, when set, makes a second submit with the same key for
	// the same agent return the first run instead of creating one.
	IdempotencyKey string
}

// Limits on what a run carries. Ids and keys are indexed (a btree entry
// must stay well under a page); a prompt is bounded so one submit cannot
// exhaust memory.
const (
	maxKeyBytes    = 255
	maxNameBytes   = 1024
	maxPromptBytes = 16 << 20
)

func (p *SubmitParams) validate() error {
	if err := run.ValidateID(p.RunID); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(p.Input) == "":
		return fmt.Errorf("%w: prompt is empty", run.ErrInvalidArgument)
	case p.AgentName == "":
		return fmt.Errorf("%w: agent name is empty", run.ErrInvalidArgument)
	case p.Timeout < 0:
		return fmt.Errorf("%w: timeout %v is negative", run.ErrInvalidArgument, p.Timeout)
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{
		{"prompt", p.Input, maxPromptBytes},
		{"agent name", p.AgentName, maxKeyBytes},
		{"session id", p.SessionID, maxKeyBytes},
		{"idempotency key", p.IdempotencyKey, maxKeyBytes},
		{"name", p.Name, maxNameBytes},
	} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	if err := checkMetadata(p.Metadata); err != nil {
		return err
	}
	if _, err := json.Marshal(p.Metadata); err != nil {
		return fmt.Errorf("%w: metadata is not JSON-encodable: %w", run.ErrInvalidArgument, err)
	}
	return nil
}

// checkText refuses what Postgres text cannot store (NUL, invalid UTF-8)
// with a clear error instead of a raw SQLSTATE.
func checkText(field, s string, maxBytes int) error {
	switch {
	case len(s) > maxBytes:
		return fmt.Errorf("%w: %s is %d bytes, more than %d", run.ErrInvalidArgument, field, len(s), maxBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", run.ErrInvalidArgument, field)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s contains a NUL byte, which Postgres text cannot store", run.ErrInvalidArgument, field)
	}
	return nil
}

// checkMetadata refuses strings that JSON encoding would silently change
// (invalid UTF-8 becomes U+FFFD), so what is stored is what was given.
func checkMetadata(v any) error {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata contains a string that is not valid UTF-8", run.ErrInvalidArgument)
		}
	case map[string]any:
		for k, e := range v {
			if err := checkMetadata(k); err != nil {
				return err
			}
			if err := checkMetadata(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkMetadata(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// SubmitRun inserts a pending run and, with Enqueue, its River job, in one
// transaction: there is never a run row without its job, nor a job without
// its row. A RunID that already has a run yields run.ErrAlreadyExists and
// changes nothing. With an IdempotencyKey that an earlier submit of the same
// agent used, it returns that run (as it is now) and creates nothing; the
// unique index makes this hold across processes and concurrent submits.
func (d *DB) SubmitRun(ctx context.Context, p SubmitParams) (*run.Output, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	out, err := d.submit(ctx, p)
	if err == nil || p.IdempotencyKey == "" || !isUniqueViolation(err) {
		return out, err
	}
	// The key (or the id) is taken: the winner of the race has committed.
	rows, qerr := d.pool.Query(ctx, sqlGetByIdempotencyKey, p.AgentName, p.IdempotencyKey)
	if qerr != nil {
		return nil, fmt.Errorf("kern: submit run: %w", qerr)
	}
	existing, qerr := collectRun(rows)
	if errors.Is(qerr, run.ErrNotFound) {
		return nil, fmt.Errorf("kern: submit run %q: %w", p.RunID, run.ErrAlreadyExists)
	}
	if qerr != nil {
		return nil, fmt.Errorf("kern: submit run: %w", qerr)
	}
	return existing.output(), nil
}

func (d *DB) submit(ctx context.Context, p SubmitParams) (*run.Output, error) {
	metadata := p.Metadata
	if metadata == nil {
		metadata = map[string]any{}
	}

	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("kern: submit run: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var jobID *int64
	if p.Enqueue {
		res, err := d.river.InsertTx(ctx, tx, RunJobArgs{RunID: p.RunID, AgentName: p.AgentName}, nil)
		if err != nil {
			return nil, fmt.Errorf("kern: submit run: enqueue: %w", err)
		}
		jobID = &res.Job.ID
	}
	var key *string
	if p.IdempotencyKey != "" {
		key = &p.IdempotencyKey
	}
	rows, err := tx.Query(ctx, sqlInsertRun, p.RunID, p.SessionID, p.AgentName, p.Name, p.Input,
		metadata, p.Timeout.Milliseconds(), jobID, key)
	if err != nil {
		return nil, fmt.Errorf("kern: submit run: %w", err)
	}
	r, err := collectRun(rows)
	if err != nil {
		if isUniqueViolation(err) {
			return nil, fmt.Errorf("kern: submit run %q: %w: %w", p.RunID, run.ErrAlreadyExists, err)
		}
		return nil, fmt.Errorf("kern: submit run: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("kern: submit run: commit: %w", err)
	}
	return r.output(), nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
