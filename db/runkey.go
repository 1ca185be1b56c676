package db

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// Run ids are per tenant: tenant t's run "order-7" and tenant u's run
// "order-7" are two runs, and neither tenant can tell that the other's
// exists. Every table names a run by its key (engine.RunKey: the id itself
// for the operator's runs, tenant + "\x1e" + id for a tenant's), so the
// tenant is part of every lookup, write, cancel request, job and
// notification without a second column; what leaves package db names the
// id (runRow.output, events, error texts).
//
// A TenantDB derives the key from its tenant and the id: another tenant's
// run of the id is simply another key. DB, the operator's handle, reads a
// run by id across tenants (operatorKey).

// operatorKey is the key of the run that id names when the operator asks:
// the operator's own run of id if there is one, else the one tenant's run
// of id. Runs of id in more than one tenant and none of the operator's is
// run.ErrInvalidArgument, saying to ask through ForTenant. An id with no run
// at all is its own key: the key of the operator's run of it to come (a
// cancel recorded for it applies to that run).
func (d *DB) operatorKey(ctx context.Context, id string) (string, error) {
	if err := run.ValidateID(id); err != nil {
		return "", err
	}
	rows, err := d.pool.Query(ctx, sqlRunKeys, id)
	if err != nil {
		return "", fmt.Errorf("kern: run %q: %w", id, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("kern: run %q: %w", id, err)
	}
	switch {
	case len(keys) == 0 || slices.Contains(keys, id):
		return id, nil
	case len(keys) == 1:
		return keys[0], nil
	default:
		return "", fmt.Errorf("kern: %w: run id %q is used by more than one tenant; read it through ForTenant", run.ErrInvalidArgument, id)
	}
}

// key is the key of this tenant's run of id.
func (t *TenantDB) key(id string) (string, error) {
	if err := run.ValidateID(id); err != nil {
		return "", err
	}
	return engine.RunKey(t.tenant, id), nil
}

// idOf is how an error text names the run of key: by its id.
func idOf(key string) string { return engine.RunID(key) }

// checkKey validates a key that came from outside a statement of kern's own
// (a River job's args, a cursor): a valid run id, and a valid tenant.
func checkKey(key string) error {
	if err := run.ValidateID(engine.RunID(key)); err != nil {
		return err
	}
	if tenant := engine.KeyTenant(key); tenant != "" || key != engine.RunID(key) {
		if tenant == "" {
			return fmt.Errorf("kern: %w: run key %q names an empty tenant", run.ErrInvalidArgument, key)
		}
		return checkTenant(tenant)
	}
	return nil
}
