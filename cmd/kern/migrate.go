package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newMigrateCmd(flags *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or update kern's and River's tables (idempotent)",
		Long: `Create or update kern's and River's tables (idempotent).

With --schema (or KERN_SCHEMA) they go in that schema, which migrate creates
when it is missing and the role may create schemas in the database; a role
that owns the schema needs nothing more (no superuser). Every other command
then needs the same --schema.`,
		Example: `  DATABASE_URL=postgres://localhost/app kern migrate
  KERN_SCHEMA=kern DATABASE_URL=postgres://kern_app@db/app kern migrate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			if err := d.Migrate(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "migrated")
			return nil
		},
	}
}
