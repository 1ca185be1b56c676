package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newMigrateCmd(flags *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "migrate",
		Short:   "Create or update kern's and River's tables (idempotent)",
		Example: `  DATABASE_URL=postgres://localhost/app kern migrate`,
		Args:    cobra.NoArgs,
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
