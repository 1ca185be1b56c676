package db

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/telemetry"
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
	// WaitTimeout bounds each wait of the run for answers to its tool calls
	// (see ApproveToolCall); 0 means DefaultWaitTimeout.
	WaitTimeout time.Duration
	// ConcurrencyKey, for a background run, puts it under the per-key limit
	// of the workers (WorkerConfig.MaxRunsPerKey); see the package doc.
	ConcurrencyKey string
	// Priority is the River priority of the run's job: 1 runs first … 4
	// last; 0 means DefaultPriority. Background runs only. The run keeps
	// it: the jobs it gets later (after an answer, a rescue) have it too.
	Priority int
	// StartAt, for a background run, keeps it pending until then (its
	// job's ScheduledAt); zero means now.
	StartAt time.Time
	// Tx, when set, submits inside the caller's transaction on this
	// database: the row and its job commit or roll back with it. Such a
	// submit is never batched with others, and needs Enqueue. With
	// WithSchema, the transaction's search_path must name the schema
	// first (run.ErrInvalidArgument otherwise).
	Tx pgx.Tx
	// WebhookURL is where the final run is posted (an absolute http or
	// https URL, at most 2 KiB); empty for none.
	WebhookURL string
	// TenantID makes the run a tenant's (run.Output.TenantID): only that
	// tenant's keys see it, and its IdempotencyKey is the tenant's own.
	TenantID string
	// ParentRunID makes the run a child of the run of that id in the same
	// tenant (TenantID; the operator's own runs when empty): its
	// Output.ParentRunID, listed by ListParams.ParentRunID and cancelled
	// with it. The parent must exist (else run.ErrNotFound), and the child
	// may be at most MaxRunDepth below its top-level run
	// (run.ErrInvalidArgument); either way nothing is written. A repeated
	// submit of the child's id keeps the parent it was first submitted with.
	// A child submitted below a run that has a cancel request ends
	// cancelled (see the package doc).
	ParentRunID string
}

// DefaultPriority is the River priority of a run submitted without one:
// 1 runs before it, 3 and 4 after.
const DefaultPriority = engine.DefaultPriority

// maxWebhookURLBytes bounds a webhook URL.
const maxWebhookURLBytes = 2 << 10

// DefaultWaitTimeout is how long a run waits for answers to its tool calls
// when it was submitted without a WaitTimeout: after it, the run ends as
// error.
const DefaultWaitTimeout = 24 * time.Hour

// Limits on what a run carries. Ids and keys are indexed (a btree entry
// must stay well under a page); a prompt is bounded so one submit cannot
// exhaust memory.
const (
	maxKeyBytes      = 255
	maxNameBytes     = 1024
	maxPromptBytes   = run.MaxInputBytes // the CLI and the HTTP API hold to it too
	maxMetadataBytes = 1 << 20
)

// validate checks p and returns its metadata as JSON.
func (p *SubmitParams) validate() (string, error) {
	if err := run.ValidateID(p.RunID); err != nil {
		return "", err
	}
	switch {
	case strings.TrimSpace(p.Input) == "":
		return "", fmt.Errorf("kern: %w: prompt is empty", run.ErrInvalidArgument)
	case p.AgentName == "":
		return "", fmt.Errorf("kern: %w: agent name is empty", run.ErrInvalidArgument)
	case p.Timeout < 0:
		return "", fmt.Errorf("kern: %w: timeout %v is negative", run.ErrInvalidArgument, p.Timeout)
	case p.WaitTimeout < 0:
		return "", fmt.Errorf("kern: %w: wait timeout %v is negative", run.ErrInvalidArgument, p.WaitTimeout)
	case p.WaitTimeout > 0 && p.WaitTimeout < time.Millisecond:
		return "", fmt.Errorf("kern: %w: wait timeout %v is less than a millisecond", run.ErrInvalidArgument, p.WaitTimeout)
	case p.Priority != 0 && (p.Priority < 1 || p.Priority > 4):
		return "", fmt.Errorf("kern: %w: priority %d is not in 1..4", run.ErrInvalidArgument, p.Priority)
	case !p.Enqueue && (p.Priority != 0 || !p.StartAt.IsZero() || p.ConcurrencyKey != ""):
		return "", fmt.Errorf("kern: %w: a priority, a start time and a concurrency key are for background runs", run.ErrInvalidArgument)
	case !p.Enqueue && p.Tx != nil:
		return "", fmt.Errorf("kern: %w: a submit in the caller's transaction must be a background run: a worker cannot see it before the commit", run.ErrInvalidArgument)
	}
	if err := checkWebhookURL(p.WebhookURL); err != nil {
		return "", err
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
		{"concurrency key", p.ConcurrencyKey, maxKeyBytes},
		{"name", p.Name, maxNameBytes},
	} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return "", err
		}
	}
	if err := checkTenant(p.TenantID); err != nil {
		return "", err
	}
	if p.Metadata == nil {
		return "{}", nil
	}
	if err := checkMetadata(p.Metadata); err != nil {
		return "", err
	}
	meta, err := json.Marshal(p.Metadata)
	if err != nil {
		return "", fmt.Errorf("kern: %w: metadata is not JSON-encodable: %w", run.ErrInvalidArgument, err)
	}
	if len(meta) > maxMetadataBytes {
		return "", fmt.Errorf("kern: %w: metadata is %d bytes as JSON, more than %d", run.ErrInvalidArgument, len(meta), maxMetadataBytes)
	}
	return string(meta), nil
}

// checkText refuses what Postgres text cannot store (NUL, invalid UTF-8)
// with a clear error instead of a raw SQLSTATE.
func checkText(field, s string, maxBytes int) error {
	switch {
	case len(s) > maxBytes:
		return fmt.Errorf("kern: %w: %s is %d bytes, more than %d", run.ErrInvalidArgument, field, len(s), maxBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("kern: %w: %s is not valid UTF-8", run.ErrInvalidArgument, field)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("kern: %w: %s contains a NUL byte, which Postgres text cannot store", run.ErrInvalidArgument, field)
	}
	return nil
}

// checkTenant refuses a tenant id that Postgres cannot store or that
// contains a control character: a run's key joins its tenant and its id
// with one (engine.RunKey), which must not occur in either.
func checkTenant(tenant string) error {
	if err := checkText("tenant id", tenant, maxKeyBytes); err != nil {
		return err
	}
	for _, r := range tenant {
		if unicode.IsControl(r) {
			return fmt.Errorf("kern: %w: tenant id contains control character %U", run.ErrInvalidArgument, r)
		}
	}
	return nil
}

// checkWebhookURL accepts an empty URL (none) or an absolute http or https
// URL with a host, at most maxWebhookURLBytes.
func checkWebhookURL(s string) error {
	if s == "" {
		return nil
	}
	if err := checkText("webhook URL", s, maxWebhookURLBytes); err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("kern: %w: webhook URL: %w", run.ErrInvalidArgument, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("kern: %w: webhook URL %q is not an absolute http or https URL", run.ErrInvalidArgument, s)
	}
	return nil
}

// checkMetadata refuses strings that JSON encoding would silently change
// (invalid UTF-8 becomes U+FFFD), so what is stored is what was given.
func checkMetadata(v any) error {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return fmt.Errorf("kern: %w: metadata contains a string that is not valid UTF-8", run.ErrInvalidArgument)
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
	out, _, err := d.SubmitRunOrExisting(ctx, p)
	return out, err
}

// SubmitRunOrExisting is SubmitRun that also says whether it created the
// run: false when an earlier submit with the same IdempotencyKey already
// had, and the run returned is that one. Of any number of identical
// submits, also at the same instant, exactly one says created (the unique
// index decides), so an HTTP API can answer 202 for it and 200 for the
// repeats.
func (d *DB) SubmitRunOrExisting(ctx context.Context, p SubmitParams) (out *run.Output, created bool, err error) {
	metadata, err := p.validate()
	if err != nil {
		return nil, false, err
	}
	it := submitItem{SubmitParams: p, metadata: metadata, trace: telemetry.JobMetadata(ctx)}
	if p.Tx != nil {
		return d.submitInTx(ctx, it)
	}
	if it.parent, it.depth, err = parentOf(ctx, d.pool, &p); err != nil {
		return nil, false, err
	}
	// The submitter's span context travels in the job's metadata: submits
	// are group-committed under a context of their own (see batcher).
	r, err := d.submits.do(ctx, it)
	if err == nil && it.parent != "" {
		err = d.cancelIfBelowCancelled(ctx, it.key())
		return r.output(), true, err
	}
	if err == nil {
		return r.output(), true, nil
	}
	if !isUniqueViolation(err) {
		return nil, false, fmt.Errorf("kern: submit run: %w", err)
	}
	if p.IdempotencyKey == "" {
		// Not the unique violation's own text: it names a constraint.
		return nil, false, fmt.Errorf("kern: submit run %q: %w", p.RunID, run.ErrAlreadyExists)
	}
	// The key (or the id) is taken: the winner of the race has committed.
	rows, qerr := d.pool.Query(ctx, sqlGetByIdempotencyKey, p.AgentName, p.IdempotencyKey, p.TenantID)
	if qerr != nil {
		return nil, false, fmt.Errorf("kern: submit run: %w", qerr)
	}
	existing, qerr := collectRun(rows)
	if errors.Is(qerr, run.ErrNotFound) {
		return nil, false, fmt.Errorf("kern: submit run %q: %w", p.RunID, run.ErrAlreadyExists)
	}
	if qerr != nil {
		return nil, false, fmt.Errorf("kern: submit run: %w", qerr)
	}
	return existing.output(), false, nil
}

// submitInTx is SubmitRun in the caller's transaction (SubmitParams.Tx),
// under a savepoint: a duplicate id or key rolls back to it, so the
// caller's transaction stays usable and gets run.ErrAlreadyExists, or the
// run of the idempotency key, as SubmitRun does.
func (d *DB) submitInTx(ctx context.Context, it submitItem) (*run.Output, bool, error) {
	if err := d.checkTxSchema(ctx, it.Tx); err != nil {
		return nil, false, err
	}
	// In the caller's transaction: its parent may be a run it submitted.
	var err error
	if it.parent, it.depth, err = parentOf(ctx, it.Tx, &it.SubmitParams); err != nil {
		return nil, false, err
	}
	sp, err := it.Tx.Begin(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("kern: submit run: %w", err)
	}
	r, err := d.submitOne(ctx, sp, it)
	if err == nil && it.parent != "" {
		err = requestIfBelowCancelled(ctx, sp, it.key())
	}
	if err == nil {
		if err = sp.Commit(ctx); err == nil {
			return r.output(), true, nil
		}
	}
	if rbErr := sp.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
		return nil, false, fmt.Errorf("kern: submit run: %w (rolling back to the savepoint: %v)", err, rbErr)
	}
	if !isUniqueViolation(err) {
		return nil, false, fmt.Errorf("kern: submit run: %w", err)
	}
	if it.IdempotencyKey == "" {
		return nil, false, fmt.Errorf("kern: submit run %q: %w", it.RunID, run.ErrAlreadyExists)
	}
	rows, qerr := it.Tx.Query(ctx, sqlGetByIdempotencyKey, it.AgentName, it.IdempotencyKey, it.TenantID)
	if qerr != nil {
		return nil, false, fmt.Errorf("kern: submit run: %w", qerr)
	}
	existing, qerr := collectRun(rows)
	if errors.Is(qerr, run.ErrNotFound) {
		return nil, false, fmt.Errorf("kern: submit run %q: %w", it.RunID, run.ErrAlreadyExists)
	}
	if qerr != nil {
		return nil, false, fmt.Errorf("kern: submit run: %w", qerr)
	}
	return existing.output(), false, nil
}

// insertOpts are the River options of the run's job: its priority and
// start time; nil when it has neither (the job's own InsertOpts apply).
func (s submitItem) insertOpts() *river.InsertOpts {
	if s.Priority == 0 && s.StartAt.IsZero() && s.trace == nil {
		return nil
	}
	return &river.InsertOpts{Priority: s.Priority, ScheduledAt: s.StartAt, Metadata: s.trace}
}

// startAt is the run's start time for its row's heartbeat_at: nil for none.
func (s submitItem) startAt() *time.Time {
	if s.StartAt.IsZero() {
		return nil
	}
	return &s.StartAt
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// submitItem is one SubmitRun in a batch.
type submitItem struct {
	SubmitParams
	metadata string // JSON
	// trace is the job's River metadata carrying the submitter's span
	// context (telemetry.JobMetadata), nil for none.
	trace []byte
	// parent is the parent's key and depth the run's depth (parentOf):
	// "" and 0 for a top-level run.
	parent string
	depth  int
}

// key is the run's key (engine.RunKey): two submits of one key in a batch
// are two submits of one run.
func (s submitItem) key() string { return engine.RunKey(s.TenantID, s.RunID) }

func (s submitItem) size() int { return len(s.Input) + len(s.metadata) }

// submitBatch inserts the runs of concurrent SubmitRun calls, and the jobs
// of the background ones, in one statement (sqlSubmitRuns): still no row
// without its job nor job without its row, whatever the batch. A duplicate
// id or key fails the batch; the batcher then submits its runs one by one,
// and only the duplicate fails. After the commit, the runs' queues are
// owed a notification (notify.go).
func (d *DB) submitBatch(ctx context.Context, items []submitItem) ([]*runRow, error) {
	n := len(items)
	ids, sessions, agents, names, inputs, metadata := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	timeouts, waits, keys := make([]int64, n), make([]int64, n), make([]*string, n)
	concKeys, webhooks, starts, tenants := make([]*string, n), make([]*string, n), make([]*time.Time, n), make([]string, n)
	enqueue, queues, priorities, jobMeta := make([]bool, n), make([]string, n), make([]int16, n), make([]*string, n)
	parents, depths := make([]*string, n), make([]int16, n)
	for i, it := range items {
		parents[i], depths[i] = optional(it.parent), int16(it.depth)
		ids[i], sessions[i], agents[i], names[i], inputs[i], metadata[i] = it.key(), it.SessionID, it.AgentName, it.Name, it.Input, it.metadata
		timeouts[i], waits[i] = it.Timeout.Milliseconds(), it.WaitTimeout.Milliseconds()
		keys[i], concKeys[i], webhooks[i], starts[i] = optional(it.IdempotencyKey), optional(it.ConcurrencyKey), optional(it.WebhookURL), it.startAt()
		tenants[i] = it.TenantID
		enqueue[i], queues[i], priorities[i] = it.Enqueue, engine.QueueFor(it.AgentName), int16(cmp.Or(it.Priority, engine.DefaultPriority))
		if it.trace != nil {
			jobMeta[i] = optional(string(it.trace))
		}
	}
	rows, err := d.pool.Query(ctx, sqlSubmitRuns, ids, sessions, agents, names, inputs, metadata, timeouts, keys, waits,
		concKeys, webhooks, starts, tenants, enqueue, queues, priorities, jobMeta, river.MaxAttemptsDefault, parents, depths)
	if err != nil {
		return nil, err
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByPos[runRow])
	if err != nil {
		return nil, err
	}
	d.notifySubmitted(items)
	byID := make(map[string]*runRow, len(inserted))
	for _, r := range inserted {
		byID[r.ID] = r
	}
	out := make([]*runRow, n)
	for i, it := range items {
		if out[i] = byID[it.key()]; out[i] == nil {
			return nil, fmt.Errorf("run %q was not inserted", it.RunID)
		}
	}
	return out, nil
}

// notifySubmitted owes the workers of the committed items' queues a
// notification (notify.go); a run that starts later needs none now.
func (d *DB) notifySubmitted(items []submitItem) {
	now := time.Now()
	var queue string
	runs := 0
	for _, it := range items {
		if !it.Enqueue || it.StartAt.After(now) {
			continue
		}
		q := engine.QueueFor(it.AgentName)
		if q != queue && runs > 0 {
			d.notifier.submitted(queue, runs)
			runs = 0
		}
		queue = q
		runs++
	}
	if runs > 0 {
		d.notifier.submitted(queue, runs)
	}
}

// submitOne inserts one run and its job in tx (the caller's transaction, or
// a schedule's), the job through River, which notifies the job's queue
// from the transaction: Postgres delivers it at tx's commit.
func (d *DB) submitOne(ctx context.Context, tx pgx.Tx, it submitItem) (*runRow, error) {
	var jobID *int64
	if it.Enqueue {
		res, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: it.key(), AgentName: it.AgentName}, it.insertOpts())
		if err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
		jobID = &res.Job.ID
	}
	rows, err := tx.Query(ctx, sqlInsertRun, it.key(), it.SessionID, it.AgentName, it.Name, it.Input,
		it.metadata, it.Timeout.Milliseconds(), jobID, optional(it.IdempotencyKey), it.WaitTimeout.Milliseconds(),
		optional(it.ConcurrencyKey), optional(it.WebhookURL), it.startAt(), it.TenantID, optional(it.parent), it.depth)
	if err != nil {
		return nil, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByPos[runRow])
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
