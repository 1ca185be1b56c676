package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/run"
	"github.com/kern-go/kern/server"
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
	var putJSON bool
	var tenant string
	// scheduler is the operator's *db.DB or, with --tenant, the tenant's
	// *db.TenantDB (its schedule names are its own; its runs the tenant's).
	type scheduler interface {
		PutSchedule(ctx context.Context, s run.Schedule) (*run.Schedule, error)
		ListSchedules(ctx context.Context) ([]*run.Schedule, error)
		DeleteSchedule(ctx context.Context, name string) error
	}
	open := func(ctx context.Context) (scheduler, func(), error) {
		d, err := flags.open(ctx)
		if err != nil {
			return nil, nil, err
		}
		if tenant == "" {
			return d, d.Close, nil
		}
		t, err := d.ForTenant(tenant)
		if err != nil {
			d.Close()
			return nil, nil, fmt.Errorf("--tenant: %w", err)
		}
		return t, d.Close, nil
	}
	put := &cobra.Command{
		Use:   "put NAME PROMPT",
		Short: "Create or replace schedule NAME; prints it as stored (with its next run)",
		Long: `Creates schedule NAME, or replaces it (keeping its last run id): from the next
due time after now, a worker serving --agent makes a background run named
NAME with PROMPT at each due time. --cron is a 5-field cron expression
("0 7 * * *"), a descriptor (@hourly, @daily, @weekly, @monthly, @yearly)
or "@every 30m", read in --timezone (an IANA zone; default UTC). A cron or
zone that does not parse exits 1 and writes nothing. --metadata values are
strings. --tenant makes it that tenant's (its API keys and dashboard
sign-ins see it and the runs it makes). It prints the stored schedule: its
fields and next run, or with --json the API's schedule object.`,
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
			if err := checkPromptSize(len(s.Prompt)); err != nil {
				return err
			}
			d, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			stored, err := d.PutSchedule(cmd.Context(), s)
			if err != nil {
				return err
			}
			if putJSON {
				return printJSON(cmd.OutOrStdout(), toScheduleJSON(stored))
			}
			return printSchedule(cmd.OutOrStdout(), stored)
		},
	}
	put.Flags().StringVar(&s.AgentName, "agent", "assistant", "agent whose runs it makes")
	put.Flags().StringVar(&s.Cron, "cron", "", `cron expression, e.g. "0 7 * * *", "@hourly", "@every 30m" (required)`)
	put.Flags().StringVar(&s.Timezone, "timezone", "", "IANA zone the cron is read in (default UTC)")
	put.Flags().StringVar(&s.SessionID, "session", "", "session of its runs")
	put.Flags().StringArrayVar(&metadata, "metadata", nil, "key=value metadata of its runs (repeat for several)")
	put.Flags().BoolVar(&s.Paused, "paused", false, "store it paused: it fires no runs until put again without --paused")
	put.Flags().BoolVar(&putJSON, "json", false, "print the stored schedule as the API's JSON object")
	put.Flags().StringVar(&tenant, "tenant", "", "make it this tenant's schedule, and its runs the tenant's (default: the operator's own)")
	_ = put.MarkFlagRequired("cron")

	var jsonOut bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List schedules by tenant and name (--json: as JSON)",
		Example: `  kern schedules list
  kern schedules list --json | jq '.[].next_run_at'
  kern schedules list --tenant acme`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			list, err := d.ListSchedules(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				arr := make([]scheduleJSON, len(list))
				for i, s := range list {
					arr[i] = toScheduleJSON(s)
				}
				return printJSON(cmd.OutOrStdout(), arr)
			}
			tenants := tenant == "" && slices.ContainsFunc(list, func(s *run.Schedule) bool { return s.TenantID != "" })
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			head := "NAME\tAGENT\tCRON\tTIMEZONE\tNEXT RUN\tPAUSED\tLAST RUN"
			if tenants {
				head = "TENANT\t" + head
			}
			fmt.Fprintln(tw, head)
			for _, s := range list {
				if tenants {
					fmt.Fprintf(tw, "%s\t", dash(s.TenantID))
				}
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
	list.Flags().BoolVar(&jsonOut, "json", false, "print the schedules as a JSON array of the API's schedule objects")
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant's schedules (default: every tenant's and the operator's own)")

	del := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete schedule NAME (its runs stay); prints \"deleted\"",
		Example: `  kern schedules delete morning-report`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
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
	del.Flags().StringVar(&tenant, "tenant", "", "delete this tenant's schedule NAME (default: the operator's own)")
	schedules.AddCommand(put, list, del)
	return schedules
}

// scheduleJSON is a schedule as the HTTP API shows it: the server's own
// form, so the two cannot drift apart.
type scheduleJSON = server.ScheduleJSON

var toScheduleJSON = server.ScheduleBody

// printSchedule writes a stored schedule for people, a field per line.
func printSchedule(w io.Writer, s *run.Schedule) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	tz := s.Timezone
	if tz == "" {
		tz = "UTC"
	}
	fmt.Fprintf(tw, "name:\t%s\n", s.Name)
	if s.TenantID != "" {
		fmt.Fprintf(tw, "tenant:\t%s\n", s.TenantID)
	}
	fmt.Fprintf(tw, "agent:\t%s\n", s.AgentName)
	fmt.Fprintf(tw, "cron:\t%s (%s)\n", s.Cron, tz)
	fmt.Fprintf(tw, "next run:\t%s\n", s.NextRunAt.Format(time.RFC3339))
	if s.Paused {
		fmt.Fprintf(tw, "paused:\ttrue: it fires no runs until put again without --paused\n")
	}
	if s.SessionID != "" {
		fmt.Fprintf(tw, "session:\t%s\n", s.SessionID)
	}
	if s.LastRunID != "" {
		fmt.Fprintf(tw, "last run:\t%s\n", s.LastRunID)
	}
	fmt.Fprintf(tw, "prompt:\t%s\n", firstLine(s.Prompt, 200))
	return tw.Flush()
}
