package db

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kern-go/kern/run"
)

// Option configures Open and New.
type Option func(*options) error

type options struct {
	schema   string
	poolMode PoolMode
	direct   *pgxpool.Config // WithDirectURL's
}

// WithSchema puts kern's and River's tables in schema instead of the
// connection's default (public): kern can then live inside an
// application's database, and two kern installs can share one database in
// two schemas without seeing each other's runs, jobs or notifications.
//
// The name must be a lower-case unquoted identifier: letters a-z, digits
// and underscores, not starting with a digit or "pg_", at most
// MaxSchemaLength bytes (River puts it in front of its notification
// channels, whose names Postgres caps at 63 bytes). Anything else is
// refused with run.ErrInvalidArgument.
//
// Open sets search_path to schema on every connection it makes; New checks
// that the caller's pool already does (see New). Migrate creates the
// schema when it is missing and the role may create it.
func WithSchema(schema string) Option {
	return func(o *options) error {
		if err := validSchema(schema); err != nil {
			return err
		}
		o.schema = schema
		return nil
	}
}

// MaxSchemaLength is the longest schema name WithSchema accepts: River
// names its channels "<schema>.river_leadership", within Postgres's 63
// bytes.
const MaxSchemaLength = 63 - len(".river_leadership")

var schemaNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func validSchema(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("kern: %w: schema name is empty", run.ErrInvalidArgument)
	case len(s) > MaxSchemaLength:
		return fmt.Errorf("kern: %w: schema name is %d bytes, more than %d", run.ErrInvalidArgument, len(s), MaxSchemaLength)
	case !schemaNameRE.MatchString(s):
		return fmt.Errorf("kern: %w: schema name %q: want lower-case letters, digits and underscores, not starting with a digit", run.ErrInvalidArgument, s)
	case strings.HasPrefix(s, "pg_"):
		return fmt.Errorf("kern: %w: schema name %q: the prefix pg_ is reserved for Postgres's own schemas", run.ErrInvalidArgument, s)
	}
	return nil
}

func buildOptions(opts []Option) (options, error) {
	o := options{poolMode: PoolModeDetect}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	return o, nil
}

// Schema is the schema given with WithSchema: "" when none was, and kern's
// tables are wherever the connections' search_path puts them. Code that
// makes River clients of its own on Pool (agent.NewWorker, the server's
// River UI) passes it as river.Config.Schema.
func (d *DB) Schema() string { return d.schema }

// withSearchPath makes cfg's connections use schema (none: unchanged).
func withSearchPath(cfg *pgx.ConnConfig, schema string) {
	if schema != "" {
		cfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
}

// checkTxSchema refuses a caller's transaction (SubmitParams.Tx) whose
// connection resolves names in another schema than kern's: the run's row
// would go there while River puts its job in kern's schema.
func (d *DB) checkTxSchema(ctx context.Context, tx pgx.Tx) error {
	if d.schema == "" {
		return nil
	}
	var current string
	if err := tx.QueryRow(ctx, "SELECT coalesce(current_schema(), '')").Scan(&current); err != nil {
		return fmt.Errorf("kern: submit run: %w", err)
	}
	if current != d.schema {
		return fmt.Errorf("kern: %w: the transaction's schema is %q, not kern's %q: "+
			"begin it on a connection whose search_path names %s first", run.ErrInvalidArgument, current, d.schema, d.schema)
	}
	return nil
}

// checkSearchPath makes sure a caller's pool resolves kern's tables in
// schema: kern's SQL names its tables without a schema. It needs one
// connection, so New talks to Postgres only when given WithSchema.
func checkSearchPath(pool *pgxpool.Pool, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var path, current string
	err := pool.QueryRow(ctx, "SELECT current_setting('search_path'), coalesce(current_schema(), '')").Scan(&path, &current)
	if err != nil {
		return fmt.Errorf("kern: check the pool's search_path: %w", err)
	}
	// The schema may not exist yet (Migrate creates it): then
	// current_schema() skips it, and the setting itself must name it first.
	first, _, _ := strings.Cut(path, ",")
	first = strings.Trim(strings.TrimSpace(first), `"`)
	if first != schema && current != schema {
		return fmt.Errorf("kern: %w: the pool's search_path is %q, not schema %q: set the pool's "+
			"ConnConfig.RuntimeParams[\"search_path\"] = %q (or search_path=%s in its URL), "+
			"or use db.Open with WithSchema; behind a connection pooler, which does not pass it on, "+
			"set the role's: ALTER ROLE … SET search_path = %s", run.ErrInvalidArgument, path, schema, schema, schema, schema)
	}
	return nil
}
