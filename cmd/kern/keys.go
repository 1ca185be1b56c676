package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// createdKeyJSON is what keys create --json prints: the only time the
// secret is shown.
type createdKeyJSON struct {
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
	Secret string `json:"secret"`
}

// listedKeyJSON is a key as keys list --json prints it: never its secret.
// RevokedAt is null while the key is valid.
type listedKeyJSON struct {
	Name      string     `json:"name"`
	Tenant    string     `json:"tenant"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func newKeysCmd(flags *rootFlags) *cobra.Command {
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke the API keys of tenants (HTTP API)",
		Long: `An API key opens the HTTP API as one tenant: it sees and cancels only that
tenant's runs and schedules. Only a hash of a key's secret is stored: the
secret is printed once, by create, and never again.`,
		Example: `  kern keys create --tenant acme --name acme-ci
  kern keys list
  kern keys revoke acme-ci`,
	}

	var tenant, name string
	var createJSON bool
	create := &cobra.Command{
		Use:   "create --tenant TENANT --name NAME",
		Short: "Create API key NAME for TENANT; prints its secret, once",
		Long: `Creates API key NAME (unique across tenants, revoked keys' names too) for
TENANT, and prints its secret ("kern_" and 43 characters) on stdout, with a
note on stderr that it is shown only this once; --json prints
{"name","tenant","secret"} instead. Store the secret now: kern keeps only its
SHA-256.`,
		Example: `  kern keys create --tenant acme --name acme-ci
  secret=$(kern keys create --tenant acme --name acme-web --json | jq -r .secret)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			secret, err := d.CreateAPIKey(cmd.Context(), tenant, name)
			if errors.Is(err, run.ErrAlreadyExists) {
				return fmt.Errorf("API key %s already exists (names are unique across tenants, revoked keys' too)", name)
			}
			if err != nil {
				return err
			}
			if createJSON {
				return printJSON(cmd.OutOrStdout(), createdKeyJSON{Name: name, Tenant: tenant, Secret: secret})
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "kern: this secret is shown only once; store it now")
			_, err = fmt.Fprintln(cmd.OutOrStdout(), secret)
			return err
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant the key opens (required)")
	create.Flags().StringVar(&name, "name", "", "name of the key, to list and revoke it by (required)")
	create.Flags().BoolVar(&createJSON, "json", false, `print {"name","tenant","secret"} as JSON`)
	_ = create.MarkFlagRequired("tenant")
	_ = create.MarkFlagRequired("name")

	revoke := &cobra.Command{
		Use:     "revoke NAME",
		Short:   "Revoke API key NAME at once; prints \"revoked\"",
		Long:    `Revokes API key NAME: the next request with it is refused. Revoking a revoked key changes nothing.`,
		Example: `  kern keys revoke acme-ci`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			if err := d.RevokeAPIKey(cmd.Context(), args[0]); err != nil {
				if errors.Is(err, run.ErrNotFound) {
					return fmt.Errorf("API key %s: not found", args[0])
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "revoked")
			return nil
		},
	}

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys by name, revoked ones too (never their secrets)",
		Example: `  kern keys list
  kern keys list --json | jq -r '.[] | select(.revoked_at == null) | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			keys, err := d.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				out := make([]listedKeyJSON, len(keys))
				for i, k := range keys {
					out[i] = listedKey(k)
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTENANT\tCREATED\tREVOKED")
			for _, k := range keys {
				revoked := "-"
				if k.RevokedAt != nil {
					revoked = k.RevokedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, k.TenantID, k.CreatedAt.UTC().Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the keys as a JSON array")

	keys.AddCommand(create, list, revoke)
	return keys
}

// listedKey is k as keys list --json prints it, times in UTC.
func listedKey(k db.APIKey) listedKeyJSON {
	out := listedKeyJSON{Name: k.Name, Tenant: k.TenantID, CreatedAt: k.CreatedAt.UTC()}
	if k.RevokedAt != nil {
		revoked := k.RevokedAt.UTC()
		out.RevokedAt = &revoked
	}
	return out
}
