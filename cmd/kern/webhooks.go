package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// rotatedSecretJSON is what webhooks secret rotate --json prints: the only
// time the secret is shown.
type rotatedSecretJSON struct {
	Tenant string `json:"tenant"`
	Secret string `json:"secret"`
}

func newWebhooksCmd(flags *rootFlags) *cobra.Command {
	webhooks := &cobra.Command{
		Use:   "webhooks",
		Short: "Manage the secrets that sign tenants' webhooks",
		Long: `A tenant's webhook deliveries are signed (Standard Webhooks) with the
tenant's own secret once it has one, else with the workers' WebhookSecret.
The body of every delivery names its tenant (tenant_id).`,
	}
	secret := &cobra.Command{
		Use:   "secret",
		Short: "Rotate a tenant's webhook signing secret",
	}

	var tenant string
	var asJSON bool
	rotate := &cobra.Command{
		Use:   "rotate --tenant TENANT",
		Short: "Make a new webhook secret for TENANT; prints it, once",
		Long: `Makes a new secret ("whsec_" and the base64 of 32 random bytes) that signs
TENANT's webhook deliveries from now on, retries of earlier runs included,
replacing its previous one, and prints it on stdout, with a note on stderr
that it is shown only this once; --json prints {"tenant","secret"} instead.
Nothing reads it back: rotate again if it is lost. (Tenants rotate their own
with POST /v1/webhook-secret.)`,
		Example: `  kern webhooks secret rotate --tenant acme
  secret=$(kern webhooks secret rotate --tenant acme --json | jq -r .secret)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			td, err := d.ForTenant(tenant)
			if err != nil {
				return err
			}
			s, err := td.RotateWebhookSecret(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rotatedSecretJSON{Tenant: tenant, Secret: s})
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "kern: this secret is shown only once; store it now")
			_, err = fmt.Fprintln(cmd.OutOrStdout(), s)
			return err
		},
	}
	rotate.Flags().StringVar(&tenant, "tenant", "", "tenant whose deliveries the secret signs (required)")
	rotate.Flags().BoolVar(&asJSON, "json", false, `print {"tenant","secret"} as JSON`)
	_ = rotate.MarkFlagRequired("tenant")
	secret.AddCommand(rotate)
	webhooks.AddCommand(secret)
	return webhooks
}
