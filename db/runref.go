package db

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/run"
)

// RunRef names one run: its id and its tenant ("" the operator's own).
type RunRef struct {
	RunID    string
	TenantID string
}

// MaxPrefixMatches is how many runs ResolveRunIDPrefix returns at most.
const MaxPrefixMatches = 10

// ResolveRunIDPrefix finds the runs that prefix names, so that people may
// type the short ids a listing prints (kern runs list). A run whose id is
// prefix itself is the answer, alone (several when several tenants own
// that id); else the runs whose id starts with prefix, newest first, at
// most MaxPrefixMatches. None is an empty slice, not an error: the caller
// says which of none, one or several it was.
//
// tenant "" looks at every tenant's runs (as run.ListParams.TenantID does);
// any other value only at that tenant's.
func (d *DB) ResolveRunIDPrefix(ctx context.Context, prefix, tenant string) ([]RunRef, error) {
	if err := run.ValidateID(prefix); err != nil {
		return nil, err
	}
	if err := checkText("tenant id", tenant, maxKeyBytes); err != nil {
		return nil, err
	}
	for _, q := range []string{sqlRunsWithID, sqlRunsWithIDPrefix} {
		rows, err := d.pool.Query(ctx, q, prefix, tenant, MaxPrefixMatches)
		if err != nil {
			return nil, fmt.Errorf("kern: find run %q: %w", prefix, err)
		}
		refs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RunRef])
		if err != nil {
			return nil, fmt.Errorf("kern: find run %q: %w", prefix, err)
		}
		if len(refs) > 0 {
			return refs, nil
		}
	}
	return []RunRef{}, nil
}

// CountRunsWithIDPrefixes counts the runs (of tenant; "" every tenant's)
// whose id starts with one of prefixes, which must all be of the same
// length in characters: a listing checks with it that the short ids it
// prints name one run each.
func (d *DB) CountRunsWithIDPrefixes(ctx context.Context, prefixes []string, tenant string) (int, error) {
	if len(prefixes) == 0 {
		return 0, nil
	}
	n := utf8.RuneCountInString(prefixes[0])
	for _, p := range prefixes {
		if err := run.ValidateID(p); err != nil {
			return 0, err
		}
		if utf8.RuneCountInString(p) != n {
			return 0, fmt.Errorf("kern: %w: prefixes %q and %q are of different lengths", run.ErrInvalidArgument, prefixes[0], p)
		}
	}
	if err := checkText("tenant id", tenant, maxKeyBytes); err != nil {
		return 0, err
	}
	var count int
	if err := d.pool.QueryRow(ctx, sqlCountRunsWithIDPrefixes, prefixes, tenant, n).Scan(&count); err != nil {
		return 0, fmt.Errorf("kern: count runs by id prefix: %w", err)
	}
	return count, nil
}
