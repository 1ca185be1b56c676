package main

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// runsView is what the run commands read through: the operator's *db.DB,
// which sees every tenant's runs, or with --tenant that tenant's
// *db.TenantDB, which sees only its own (another's read as unknown).
type runsView interface {
	GetRun(ctx context.Context, runID string) (*run.Output, error)
	WaitRun(ctx context.Context, runID string) (*run.Output, error)
	ListRuns(ctx context.Context, p run.ListParams) (*run.ListResult, error)
	Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error]
	StoredEvents(ctx context.Context, runID string, afterSeq int64) ([]run.Event, error)
	Messages(ctx context.Context, runID string) ([]run.Message, error)
	CancelRunResult(ctx context.Context, runID string) (db.CancelResult, error)
}

// tenantFlag adds --tenant to cmd, with what it does there.
func tenantFlag(cmd *cobra.Command, tenant *string, usage string) {
	cmd.Flags().StringVar(tenant, "tenant", "", usage)
}

// viewOf is d as tenant sees it ("": the operator, every tenant's runs).
func viewOf(d *db.DB, tenant string) (runsView, error) {
	if tenant == "" {
		return d, nil
	}
	t, err := d.ForTenant(tenant)
	if err != nil {
		return nil, fmt.Errorf("--tenant: %w", err)
	}
	return t, nil
}

// resolveRunID is the run id arg names: the id itself, or the one run
// whose id starts with it (the short ids of kern runs list), among
// tenant's runs ("": every tenant's). None is run.ErrNotFound; several is
// an error listing them.
func resolveRunID(ctx context.Context, d *db.DB, arg, tenant string) (string, error) {
	refs, err := d.ResolveRunIDPrefix(ctx, arg, tenant)
	if err != nil {
		return "", err
	}
	switch {
	case len(refs) == 0:
		if tenant != "" {
			return "", fmt.Errorf("run %q of tenant %q: %w", arg, tenant, run.ErrNotFound)
		}
		return "", fmt.Errorf("run %q: %w", arg, run.ErrNotFound)
	case len(refs) == 1:
		return refs[0].RunID, nil
	case refs[0].RunID == arg && refs[0].TenantID == "":
		// The operator's own run of the id comes first, as db.DB reads it.
		return arg, nil
	}
	var b strings.Builder
	if refs[0].RunID == arg {
		fmt.Fprintf(&b, "run id %q is ambiguous: tenants own a run each of that id; pass --tenant:", arg)
	} else {
		fmt.Fprintf(&b, "run id prefix %q is ambiguous: it starts the ids of", arg)
		if len(refs) == db.MaxPrefixMatches {
			fmt.Fprintf(&b, " %d or more runs, among them:", len(refs))
		} else {
			fmt.Fprintf(&b, " %d runs:", len(refs))
		}
	}
	for _, r := range refs {
		fmt.Fprintf(&b, "\n  %s", r.RunID)
		if r.TenantID != "" {
			fmt.Fprintf(&b, " (tenant %s)", r.TenantID)
		}
	}
	return "", fmt.Errorf("%s", b.String())
}

// listShortIDs are the short forms kern runs list prints: shortIDs,
// lengthened until each names one run of the table (of tenant; "" every
// tenant's), not only of the listing; full ids when that takes more than a
// few tries, or when an id is not plain ASCII.
func listShortIDs(ctx context.Context, d *db.DB, tenant string, runs []*run.Output) ([]string, error) {
	full := func() []string {
		ids := make([]string, len(runs))
		for i, r := range runs {
			ids[i] = r.RunID
		}
		return ids
	}
	n := shortIDLen(runs)
	for range 3 {
		var prefixes []string
		for _, r := range runs {
			if !isASCII(r.RunID) {
				return full(), nil
			}
			if len(r.RunID) > n {
				prefixes = append(prefixes, r.RunID[:n])
			}
		}
		if len(prefixes) == 0 {
			return full(), nil
		}
		count, err := d.CountRunsWithIDPrefixes(ctx, prefixes, tenant)
		if err != nil {
			return nil, err
		}
		if count <= len(prefixes) { // each listed run matches its own prefix alone
			ids := make([]string, len(runs))
			for i, r := range runs {
				ids[i] = r.RunID[:min(n, len(r.RunID))]
			}
			return ids, nil
		}
		n += 5 // a UUIDv7: 8 then 13 characters are its time in ms
	}
	return full(), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// tenantReadUsage is --tenant's help on the commands that read one run.
const tenantReadUsage = "look RUN_ID (or a prefix of it) up among this tenant's runs only (default: every tenant's)"

// openRun is the view of tenant and the id of the run arg names (an id or
// a unique prefix of one: resolveRunID).
func openRun(ctx context.Context, d *db.DB, arg, tenant string) (runsView, string, error) {
	v, err := viewOf(d, tenant)
	if err != nil {
		return nil, "", err
	}
	id, err := resolveRunID(ctx, d, arg, tenant)
	if err != nil {
		return nil, "", err
	}
	return v, id, nil
}
