package db

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kern-go/kern/run"
)

// List limits.
const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

// ListRuns returns runs newest first, filtered by p, one page at a time:
// pass ListResult.NextCursor back as p.Cursor for the next page (empty on
// the last). Pages are stable under inserts: a keyset, not an offset.
func (d *DB) ListRuns(ctx context.Context, p run.ListParams) (*run.ListResult, error) {
	limit := p.Limit
	switch {
	case limit == 0:
		limit = defaultListLimit
	case limit < 0 || limit > maxListLimit:
		return nil, fmt.Errorf("kern: %w: limit %d is not in 1..%d", run.ErrInvalidArgument, limit, maxListLimit)
	}
	statuses, err := statusStrings(p.Statuses, false)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ field, value string }{
		{"agent name", p.AgentName}, {"session id", p.SessionID}, {"name", p.Name}, {"tenant id", p.TenantID},
	} {
		if err := checkText(f.field, f.value, maxNameBytes); err != nil {
			return nil, err
		}
	}
	var afterAt *time.Time
	var afterID string
	if p.Cursor != "" {
		at, id, err := decodeCursor(p.Cursor)
		if err != nil {
			return nil, err
		}
		afterAt, afterID = &at, id
	}
	query, args := sqlListRuns, []any{statuses, p.SessionID, p.Name, afterAt, afterID, limit + 1}
	switch {
	case p.ParentRunID != "":
		// The parent's key names its tenant too: its children are all in it.
		parent, err := d.childrenKey(ctx, &p)
		if err != nil {
			return nil, err
		}
		query, args = sqlListRunsOfParent, append(args, parent, p.AgentName)
	case p.TenantID != "" && p.AgentName != "":
		query, args = sqlListRunsOfTenantAgent, append(args, p.AgentName, p.TenantID)
	case p.TenantID != "":
		query, args = sqlListRunsOfTenant, append(args, p.TenantID)
	case p.AgentName != "":
		query, args = sqlListRunsOfAgent, append(args, p.AgentName)
	}
	rows, err := d.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("kern: list runs: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByPos[runRow])
	if err != nil {
		return nil, fmt.Errorf("kern: list runs: %w", err)
	}
	res := &run.ListResult{Runs: make([]*run.Output, 0, min(len(got), limit))}
	for i, r := range got {
		if i == limit {
			last := got[limit-1]
			res.NextCursor = encodeCursor(last.CreatedAt, last.ID)
			break
		}
		res.Runs = append(res.Runs, r.output())
	}
	return res, nil
}

// deleteBatch is how many rows one statement of DeleteRuns deletes at
// most: each batch is its own short transaction, so a large backlog never
// holds locks, or builds up dead rows and WAL, in one go.
const deleteBatch = 1000

// DeleteRuns deletes finished runs — only terminal ones, ever — whose
// status is in p.Statuses (all terminal statuses when empty) and that
// finished at least p.OlderThan ago, with their events and cancel requests.
// It returns how many runs it deleted.
//
// It deletes oldest first, in batches of at most 1,000 runs, each its own
// transaction, until fewer than a batch are left or ctx ends; on an error
// the batches before it stay deleted and are counted. Concurrent calls (the
// retention of every worker) share the work instead of waiting on each
// other.
//
// When the cancelled status is included (as it is when p.Statuses is
// empty), it also deletes cancel requests made at least p.OlderThan ago
// for ids that have no run: a cancel-before-start request therefore lasts
// until then — with the workers' default Retention, a day — and a run
// submitted with that id later is not cancelled by it.
func (d *DB) DeleteRuns(ctx context.Context, p run.DeleteParams) (int, error) {
	return d.deleteRuns(ctx, p, 0)
}

// deleteRuns is DeleteRuns with a pause between batches (a worker's
// retention pass paces itself so the runs flowing meanwhile keep their
// latency; see engineDB.Retain).
func (d *DB) deleteRuns(ctx context.Context, p run.DeleteParams, pause time.Duration) (int, error) {
	if p.OlderThan < 0 {
		return 0, fmt.Errorf("kern: %w: older than %v is negative: want how long ago a run finished, at least", run.ErrInvalidArgument, p.OlderThan)
	}
	statuses, err := statusStrings(p.Statuses, true)
	if err != nil {
		return 0, err
	}
	if statuses == nil {
		statuses = []string{string(run.StatusCompleted), string(run.StatusError), string(run.StatusCancelled)}
	}
	olderThan := p.OlderThan.Seconds()
	total, err := d.inBatches(ctx, pause, func(after pgtype.Timestamptz) (int, pgtype.Timestamptz, error) {
		return d.deleteOnce(ctx, sqlDeleteRuns, statuses, olderThan, after, deleteBatch)
	})
	if err != nil {
		return total, fmt.Errorf("kern: delete runs: %w", err)
	}
	if !slices.Contains(statuses, string(run.StatusCancelled)) {
		return total, nil
	}
	if _, err := d.inBatches(ctx, pause, func(after pgtype.Timestamptz) (int, pgtype.Timestamptz, error) {
		return d.deleteOnce(ctx, sqlDeleteStrayCancels, olderThan, after, deleteBatch)
	}); err != nil {
		return total, fmt.Errorf("kern: delete runs: cancel requests without a run: %w", err)
	}
	return total, nil
}

// inBatches calls batch, which deletes at most deleteBatch rows from its
// cursor on and returns the count and the next cursor, until a batch comes
// back short. The cursor is a timestamp the rows are taken in order of, so
// rows that a filter passes over are read once per call, not once per batch.
func (d *DB) inBatches(ctx context.Context, pause time.Duration, batch func(after pgtype.Timestamptz) (int, pgtype.Timestamptz, error)) (int, error) {
	total := 0
	after := pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	for {
		n, last, err := batch(after)
		total += n
		if err != nil {
			return total, err
		}
		if n < deleteBatch {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if pause > 0 {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-time.After(pause):
			}
		}
		after = last
	}
}

// Retain implements engine.Store: a worker's retention pass, DeleteRuns of
// the terminal runs that finished before olderThan, with pause between its
// batches of 1,000.
func (d engineDB) Retain(ctx context.Context, olderThan, pause time.Duration) (int, error) {
	return d.deleteRuns(ctx, run.DeleteParams{OlderThan: olderThan}, pause)
}

// deleteOnce runs one batch statement, which answers (count, cursor).
func (d *DB) deleteOnce(ctx context.Context, query string, args ...any) (int, pgtype.Timestamptz, error) {
	var n int
	var last pgtype.Timestamptz
	err := d.pool.QueryRow(ctx, query, args...).Scan(&n, &last)
	return n, last, err
}

// statusStrings validates a status filter; nil for no filter.
func statusStrings(statuses []run.Status, terminalOnly bool) ([]string, error) {
	if len(statuses) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(statuses))
	for _, s := range statuses {
		switch {
		case !s.Valid():
			return nil, fmt.Errorf("kern: %w: unknown status %q", run.ErrInvalidArgument, s)
		case terminalOnly && !s.Terminal():
			return nil, fmt.Errorf("kern: %w: status %q is not terminal; only finished runs are deleted", run.ErrInvalidArgument, s)
		}
		out = append(out, string(s))
	}
	return out, nil
}

// A cursor is the keyset of the last run of a page, opaque to callers.
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("kern: %w: malformed cursor", run.ErrInvalidArgument)
	}
	micros, id, ok := strings.Cut(string(raw), "|")
	us, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil || checkKey(id) != nil {
		return time.Time{}, "", fmt.Errorf("kern: %w: malformed cursor", run.ErrInvalidArgument)
	}
	return time.UnixMicro(us), id, nil
}
