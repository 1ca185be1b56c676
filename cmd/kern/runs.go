package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

func newRunsCmd(flags *rootFlags) *cobra.Command {
	runs := &cobra.Command{Use: "runs", Short: "Submit, inspect, wait for and cancel runs"}
	withDB := func(fn func(cmd *cobra.Command, d *db.DB, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			return fn(cmd, d, args)
		}
	}

	var agentName, sessionID, runID string
	var timeout time.Duration
	submit := &cobra.Command{
		Use:   "submit PROMPT",
		Short: "Submit a background run; prints it (pending)",
		Args:  cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			// The submitting side needs no model: a worker does the work.
			a := &agent.Agent{Name: agentName, Model: agent.OpenAIChat{}, DB: d}
			out, err := a.Run(cmd.Context(), args[0], agent.Background(true),
				agent.WithRunID(runID), agent.WithSessionID(sessionID), agent.WithTimeout(timeout))
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
	submit.Flags().StringVar(&agentName, "agent", "assistant", "agent name")
	submit.Flags().StringVar(&sessionID, "session", "", "session id")
	submit.Flags().StringVar(&runID, "run-id", "", "run id (default: a new UUIDv7)")
	submit.Flags().DurationVar(&timeout, "timeout", 0, "run timeout (default: the worker's)")

	var transcript bool
	get := &cobra.Command{
		Use:   "get RUN_ID",
		Short: "Print a run (--transcript: and its messages)",
		Args:  cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			out, err := d.GetRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := printJSON(cmd.OutOrStdout(), out); err != nil || !transcript {
				return err
			}
			msgs, err := d.Messages(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printTranscript(cmd.OutOrStdout(), msgs)
		}),
	}
	get.Flags().BoolVar(&transcript, "transcript", false, "also print the run's transcript, one line per message")
	wait := &cobra.Command{
		Use:   "wait RUN_ID",
		Short: "Wait until a run is terminal, then print it",
		Args:  cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			out, err := d.WaitRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
	cancel := &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: "Cancel a run (also one not submitted yet); prints true if it ends cancelled",
		Args:  cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			ok, err := d.CancelRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), ok)
			return nil
		}),
	}
	var params run.ListParams
	var statuses []string
	list := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first (--cursor for the next page)",
		Args:  cobra.NoArgs,
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, _ []string) error {
			for _, s := range statuses {
				params.Statuses = append(params.Statuses, run.Status(s))
			}
			page, err := d.ListRuns(cmd.Context(), params)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), page)
		}),
	}
	list.Flags().StringSliceVar(&statuses, "status", nil, "only these statuses (pending,running,completed,error,cancelled)")
	list.Flags().StringVar(&params.AgentName, "agent", "", "only this agent's runs")
	list.Flags().StringVar(&params.SessionID, "session", "", "only this session's runs")
	list.Flags().IntVar(&params.Limit, "limit", 50, "runs per page")
	list.Flags().StringVar(&params.Cursor, "cursor", "", "NextCursor of the previous page")

	var olderThan time.Duration
	var clearStatuses []string
	clear := &cobra.Command{
		Use:   "clear",
		Short: "Delete finished runs (never pending or running ones); prints how many",
		Args:  cobra.NoArgs,
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, _ []string) error {
			p := run.DeleteParams{OlderThan: olderThan}
			for _, s := range clearStatuses {
				p.Statuses = append(p.Statuses, run.Status(s))
			}
			n, err := d.DeleteRuns(cmd.Context(), p)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n)
			return nil
		}),
	}
	clear.Flags().DurationVar(&olderThan, "older-than", time.Hour, "only runs finished at least this long ago")
	clear.Flags().StringSliceVar(&clearStatuses, "status", nil, "only these terminal statuses (default: all three)")

	runs.AddCommand(submit, get, wait, cancel, list, clear)
	return runs
}
