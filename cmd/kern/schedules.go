package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/run"
)

func newSchedulesCmd(flags *rootFlags) *cobra.Command {
	schedules := &cobra.Command{
		Use:   "schedules",
		Short: "Create, list and delete recurring runs (cron schedules)",
		Long: `A schedule makes one background run of its agent at each due time of its
cron expression, fired by the workers that serve the agent (exactly one
run per due time, however many workers).`,
		Example: `  kern schedules put morning-report --agent assistant --cron "0 7 * * *" --timezone Europe/Paris "Summarise yesterday."
  kern schedules list
  kern schedules delete morning-report`,
	}

	var s run.Schedule
	var metadata []string
	put := &cobra.Command{
		Use:   "put NAME PROMPT",
		Short: "Create or replace schedule NAME; prints it as stored (with NextRunAt)",
		Long: `Creates schedule NAME, or replaces it (keeping its LastRunID): from the next
due time after now, a worker serving --agent makes a background run named
NAME with PROMPT at each due time. --cron is a 5-field cron expression
("0 7 * * *"), a descriptor (@hourly, @daily, @weekly, @monthly, @yearly)
or "@every 30m", read in --timezone (an IANA zone; default UTC). A cron or
zone that does not parse exits 1 and writes nothing. --metadata values are
strings.`,
		Example: `  kern schedules put morning-report --agent assistant --cron "0 7 * * *" --timezone Europe/Paris "Summarise yesterday."
  kern schedules put poll --agent watcher --cron "@every 5m" --session watch --metadata team=ops "Anything new?"
  kern schedules put morning-report --agent assistant --cron "0 7 * * *" --paused "Summarise yesterday."   # pause it`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s.Name, s.Prompt = args[0], args[1]
			if len(metadata) > 0 {
				s.Metadata = map[string]any{}
				for _, kv := range metadata {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--metadata %q: want key=value", kv)
					}
					s.Metadata[k] = v
				}
			}
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			stored, err := d.PutSchedule(cmd.Context(), s)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), stored)
		},
	}
	put.Flags().StringVar(&s.AgentName, "agent", "assistant", "agent whose runs it makes")
	put.Flags().StringVar(&s.Cron, "cron", "", `cron expression, e.g. "0 7 * * *", "@hourly", "@every 30m" (required)`)
	put.Flags().StringVar(&s.Timezone, "timezone", "", "IANA zone the cron is read in (default UTC)")
	put.Flags().StringVar(&s.SessionID, "session", "", "session of its runs")
	put.Flags().StringArrayVar(&metadata, "metadata", nil, "key=value metadata of its runs (repeat for several)")
	put.Flags().BoolVar(&s.Paused, "paused", false, "store it paused: it fires no runs until put again without --paused")
	_ = put.MarkFlagRequired("cron")

	var jsonOut bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List schedules by name (--json: as JSON)",
		Example: `  kern schedules list
  kern schedules list --json | jq '.[].NextRunAt'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			list, err := d.ListSchedules(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				if list == nil {
					list = []*run.Schedule{}
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tAGENT\tCRON\tTIMEZONE\tNEXT RUN\tPAUSED\tLAST RUN")
			for _, s := range list {
				tz := s.Timezone
				if tz == "" {
					tz = "UTC"
				}
				last := s.LastRunID
				if last == "" {
					last = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", s.Name, s.AgentName, s.Cron, tz,
					s.NextRunAt.Format(time.RFC3339), s.Paused, last)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&jsonOut, "json", false, "print the schedules as a JSON array")

	del := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete schedule NAME (its runs stay); prints \"deleted\"",
		Example: `  kern schedules delete morning-report`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := flags.open(cmd.Context())
			if err != nil {
				return err
			}
			defer d.Close()
			if err := d.DeleteSchedule(cmd.Context(), args[0]); err != nil {
				if errors.Is(err, run.ErrNotFound) {
					return fmt.Errorf("schedule %s: not found", args[0])
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "deleted")
			return nil
		},
	}
	schedules.AddCommand(put, list, del)
	return schedules
}
