package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/db"
)

type rootFlags struct {
	databaseURL string
	schema      string
	directURL   string // --direct-database-url
	poolMode    string // --pool-mode
}

func newRootCmd() *cobra.Command {
	flags := &rootFlags{}
	root := &cobra.Command{
		Use:           "kern",
		Short:         "Durable background LLM agent runs on Postgres",
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  kern migrate
  kern worker --config agents.yaml
  kern runs submit --agent assistant "What is the capital of France?"
  kern schedules put morning --agent assistant --cron "0 7 * * *" "Summarise yesterday."
  source <(kern completion bash)   # or zsh, fish, powershell`,
	}
	// The default is read when a command opens the database, not here: a
	// flag's default is printed by every --help, and DATABASE_URL often
	// holds a password.
	root.PersistentFlags().StringVar(&flags.databaseURL, "database-url", "", "Postgres URL (default $DATABASE_URL)")
	root.PersistentFlags().StringVar(&flags.schema, "schema", "", "Postgres schema of kern's and River's tables (default $KERN_SCHEMA, else the connection's search_path, usually public)")
	root.PersistentFlags().StringVar(&flags.directURL, "direct-database-url", "", "Postgres URL that reaches Postgres itself when --database-url is a transaction pooler's: LISTEN, workers' liveness and migrate use it (default $KERN_DIRECT_DATABASE_URL)")
	root.PersistentFlags().StringVar(&flags.poolMode, "pool-mode", "", "what --database-url connects to: detect, session (Postgres or a session pooler) or transaction (a transaction pooler) (default $KERN_POOL_MODE, else detect)")
	root.AddCommand(newMigrateCmd(flags), newWorkerCmd(flags), newRunsCmd(flags), newSchedulesCmd(flags), newKeysCmd(flags), newWebhooksCmd(flags), newRateLimitsCmd(flags), newServeCmd(flags), newVersionCmd())
	return root
}

func (f *rootFlags) open(ctx context.Context) (*db.DB, error) {
	url := f.databaseURL
	if url == "" {
		url = os.Getenv("DATABASE_URL")
	}
	if url == "" {
		return nil, errors.New("no database: set DATABASE_URL or pass --database-url")
	}
	schema := f.schema
	if schema == "" {
		schema = os.Getenv("KERN_SCHEMA")
	}
	var opts []db.Option
	if schema != "" {
		opts = append(opts, db.WithSchema(schema))
	}
	if direct := cmp.Or(f.directURL, os.Getenv("KERN_DIRECT_DATABASE_URL")); direct != "" {
		opts = append(opts, db.WithDirectURL(direct))
	}
	mode, err := db.ParsePoolMode(cmp.Or(f.poolMode, os.Getenv("KERN_POOL_MODE")))
	if err != nil {
		return nil, err
	}
	opts = append(opts, db.WithPoolMode(mode))
	return db.Open(ctx, url, opts...)
}

// printJSON writes v to w as indented JSON (w is a command's OutOrStdout:
// os.Stdout unless a test set another).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
