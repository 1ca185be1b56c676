package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/run"
)

func newRateLimitsCmd(flags *rootFlags) *cobra.Command {
	limits := &cobra.Command{
		Use:   "ratelimits",
		Short: "Set and list the rate limits every worker shares, per model id",
		Long: `A rate limit is a budget of one model id shared by every worker on the
database: at most --rpm model requests start, and at most --tpm tokens are
spent, in any 60 s window across the fleet. Runs that wait for it stay
running, keep their attempt, and say why in their error.`,
		Example: `  kern ratelimits set gpt-5-mini --rpm 500 --tpm 200000
  kern ratelimits set gpt-5-mini --rpm 0 --tpm 0   # remove the limit
  kern ratelimits list`,
	}
	var l run.RateLimit
	set := &cobra.Command{
		Use:   "set MODEL",
		Short: "Set MODEL's budgets (0: no limit on that dimension; both 0 remove the limit)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l.Model = args[0]
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			if err := d.SetRateLimit(cmd.Context(), l); err != nil {
				return err
			}
			if l.RequestsPerMinute == 0 && l.TokensPerMinute == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "removed the rate limit of %s\n", l.Model)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", l.Model, describeLimit(l))
			return nil
		},
	}
	set.Flags().IntVar(&l.RequestsPerMinute, "rpm", 0, "model requests per minute across the fleet (0: no limit)")
	set.Flags().IntVar(&l.TokensPerMinute, "tpm", 0, "tokens per minute across the fleet (0: no limit)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the models with a rate limit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			ls, err := d.ListRateLimits(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tREQUESTS/MIN\tTOKENS/MIN")
			for _, l := range ls {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Model, orNone(l.RequestsPerMinute), orNone(l.TokensPerMinute))
			}
			return tw.Flush()
		},
	}
	limits.AddCommand(set, list)
	return limits
}

func orNone(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func describeLimit(l run.RateLimit) string {
	return fmt.Sprintf("%s requests/min, %s tokens/min", orNone(l.RequestsPerMinute), orNone(l.TokensPerMinute))
}
