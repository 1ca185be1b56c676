package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/run"
)

// addApprovalCmds adds approve, reject and answer to the runs command: the
// answers to the tool calls a waiting run (run.StatusWaiting) waits on,
// listed in its Waiting ("kern runs get ID").
func addApprovalCmds(runs *cobra.Command, flags *rootFlags) {
	var tenant string
	answer := func(verb string, fn func(ctx context.Context, d answerer, runID, callID string, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			var v answerer = d
			if tenant != "" {
				if v, err = d.ForTenant(tenant); err != nil {
					return fmt.Errorf("--tenant: %w", err)
				}
			}
			runID, callID := args[0], args[1]
			id, err := resolveRunID(cmd.Context(), d, runID, tenant)
			if err == nil {
				runID = id
				err = fn(cmd.Context(), v, runID, callID, args[2:])
			}
			switch {
			case errors.Is(err, run.ErrNotWaiting):
				return fmt.Errorf("run %s: not waiting on that call (%s): never asked, already answered, or the run is not waiting", runID, callID)
			case errors.Is(err, run.ErrNotFound):
				return fmt.Errorf("run %s: not found", runID)
			case err != nil:
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), verb)
			return nil
		}
	}

	approve := &cobra.Command{
		Use:   "approve RUN_ID CALL_ID",
		Short: "Approve a tool call a waiting run waits on; a worker then makes it",
		Long: `Approves call CALL_ID of waiting run RUN_ID (the run's Waiting lists its
open calls: kern runs get RUN_ID; RUN_ID may be a unique prefix of the
id, as the short ids of kern runs list). A worker serving the run's agent makes the
call once every call the run waits on is answered. Prints "approved". The
first answer to a call stands: another one, or one for a call the run does
not wait on, exits 1 saying "not waiting on that call"; an unknown run
exits 1 saying "not found".`,
		Example: `  kern runs list --status waiting
  kern runs approve 01968c5e-… call_abc123`,
		Args: cobra.ExactArgs(2),
		RunE: answer("approved", func(ctx context.Context, d answerer, runID, callID string, _ []string) error {
			return d.ApproveToolCall(ctx, runID, callID)
		}),
	}

	var reason string
	reject := &cobra.Command{
		Use:   "reject RUN_ID CALL_ID",
		Short: "Reject a tool call a waiting run waits on; the model reads \"rejected: REASON\"",
		Long: `Rejects call CALL_ID of waiting run RUN_ID: the call is never made, and the
model reads "rejected: <reason>" as its result. Prints "rejected"; exits 1
as approve does.`,
		Example: `  kern runs reject 01968c5e-… call_abc123 --reason "not on production"`,
		Args:    cobra.ExactArgs(2),
		RunE: answer("rejected", func(ctx context.Context, d answerer, runID, callID string, _ []string) error {
			return d.RejectToolCall(ctx, runID, callID, reason)
		}),
	}
	reject.Flags().StringVar(&reason, "reason", "", "why, for the model to read")

	answerCmd := &cobra.Command{
		Use:   "answer RUN_ID CALL_ID [OUTPUT|-]",
		Short: "Answer a tool call (an External tool's) with OUTPUT, or stdin",
		Long: `Answers call CALL_ID of waiting run RUN_ID with OUTPUT, which the model
reads as the call's result. Without OUTPUT, or with "-", the output is read
from stdin (one trailing newline dropped). Prints "answered"; exits 1 as
approve does.`,
		Example: `  kern runs answer 01968c5e-… call_abc123 "The operator says: yes, go ahead."
  jq -c . result.json | kern runs answer 01968c5e-… call_abc123`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return answer("answered", func(ctx context.Context, d answerer, runID, callID string, rest []string) error {
				var output string
				if len(rest) == 1 && rest[0] != "-" {
					output = rest[0]
				} else {
					b, err := io.ReadAll(cmd.InOrStdin())
					if err != nil {
						return fmt.Errorf("reading the output from stdin: %w", err)
					}
					output = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
				}
				return d.SubmitToolResult(ctx, runID, callID, output)
			})(cmd, args)
		},
	}
	for _, c := range []*cobra.Command{approve, reject, answerCmd} {
		tenantFlag(c, &tenant, tenantReadUsage)
	}
	runs.AddCommand(approve, reject, answerCmd)
}

// answerer is the operator's *db.DB or, with --tenant, the tenant's
// *db.TenantDB, which answers only the tenant's runs.
type answerer interface {
	ApproveToolCall(ctx context.Context, runID, callID string) error
	RejectToolCall(ctx context.Context, runID, callID, reason string) error
	SubmitToolResult(ctx context.Context, runID, callID, output string) error
}
