package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// dbRunner wraps a command's work with an open database.
type dbRunner func(fn func(cmd *cobra.Command, d *db.DB, args []string) error) func(*cobra.Command, []string) error

func newRunsCmd(flags *rootFlags) *cobra.Command {
	runs := &cobra.Command{
		Use:   "runs",
		Short: "Submit, inspect, follow, wait for and cancel runs",
		Long: `Commands on runs. They print tables for people (relative times, short ids;
--wide for more columns; colours only on a terminal, never with NO_COLOR)
and, with --json, each run exactly as the HTTP API shows it (list: without
its content). A RUN_ID may be any unique prefix of a run's id, such as the
short ids of list; --tenant reads and makes one tenant's runs. Errors go to
stderr; the exit code is 0 on success and 1 on an error (runs wait has more).`,
		Example: `  kern runs submit --agent assistant "What is the capital of France?"
  kern runs list --status running
  kern runs wait --follow "$id"`,
	}
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
	runs.AddCommand(newSubmitCmd(withDB), newGetCmd(withDB), newListCmd(withDB), newWaitCmd(withDB),
		newEventsCmd(withDB), newCancelCmd(withDB), newClearCmd(withDB))
	addApprovalCmds(runs, flags) // approve, reject, answer: approval.go
	return runs
}

func newSubmitCmd(withDB dbRunner) *cobra.Command {
	var (
		agentName, name, sessionID, runID, idemKey, tenant string
		metadata                                           []string
		timeout, delay                                     time.Duration
		priority                                           int
		wait                                               waitOpts
	)
	cmd := &cobra.Command{
		Use:   "submit [PROMPT|-]",
		Short: "Submit a background run and print it (pending); --wait or --follow to see it through",
		Long: `Submits a run for a worker serving --agent. The prompt is the argument, or
stdin when the argument is "-" or absent and stdin is not a terminal; at
most 1 MiB (run.MaxInputBytes, as for the HTTP API).
--metadata values are strings. With --wait or --follow it then behaves as
kern runs wait, exit codes included.`,
		Example: `  kern runs submit --agent assistant "What is the capital of France?"
  echo "Summarise this" | kern runs submit --agent writer --session s1 --metadata team=docs
  id=$(kern runs submit --json --idempotency-key order-42 "Draft the mail" | jq -r .run_id)
  kern runs submit --follow "Tell me a story"`,
		Args: cobra.MaximumNArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			prompt, err := readPrompt(cmd.InOrStdin(), args)
			if err != nil {
				return err
			}
			meta, err := parseMetadata(metadata)
			if err != nil {
				return err
			}
			opts := []agent.RunOption{agent.Background(true), agent.WithSessionID(sessionID),
				agent.WithName(name), agent.WithTimeout(timeout)}
			if runID != "" {
				opts = append(opts, agent.WithRunID(runID))
			}
			if meta != nil {
				opts = append(opts, agent.WithMetadata(meta))
			}
			if idemKey != "" {
				opts = append(opts, agent.WithIdempotencyKey(idemKey))
			}
			if delay != 0 {
				opts = append(opts, agent.WithDelay(delay))
			}
			if priority != 0 {
				opts = append(opts, agent.WithPriority(priority))
			}
			view, err := viewOf(d, tenant)
			if err != nil {
				return err
			}
			if tenant != "" {
				opts = append(opts, agent.WithTenant(tenant))
			}
			// The submitting side needs no model: a worker does the work.
			a := &agent.Agent{Name: agentName, Model: agent.OpenAIChat{}, DB: d}
			out, err := a.Run(cmd.Context(), prompt, opts...)
			if err != nil {
				return err
			}
			if wait.follow || wait.wait {
				if !wait.json {
					fmt.Fprintln(cmd.ErrOrStderr(), "submitted", out.RunID)
				}
				return waitFor(cmd, view, out.RunID, wait)
			}
			return newPrinter(cmd.OutOrStdout(), wait.json, wait.wide).run(out)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&agentName, "agent", "assistant", "agent name (a worker must serve it)")
	f.StringVar(&name, "name", "", "run name, for people and for list --name")
	f.StringVar(&sessionID, "session", "", "session id: the run sees the session's earlier runs")
	f.StringArrayVar(&metadata, "metadata", nil, "metadata key=value (repeatable)")
	f.StringVar(&idemKey, "idempotency-key", "", "a second submit with this key returns the first run")
	f.DurationVar(&delay, "delay", 0, "keep the run pending this long first")
	f.IntVar(&priority, "priority", 0, "1 runs first … 4 last (default 2)")
	f.StringVar(&runID, "run-id", "", "run id (default: a new UUIDv7)")
	tenantFlag(cmd, &tenant, "submit the run as this tenant's: its API keys and dashboard sign-ins see it (default: the operator's own, which only the CLI and Go API see)")
	f.DurationVar(&timeout, "timeout", 0, "run timeout (default: the worker's)")
	f.BoolVar(&wait.wait, "wait", false, "wait for the run like kern runs wait (exit codes included)")
	f.BoolVarP(&wait.follow, "follow", "f", false, "print the content as it streams, like kern runs wait --follow")
	f.DurationVar(&wait.timeout, "wait-timeout", 0, "with --wait/--follow: give up waiting after this long (exit 3)")
	f.BoolVar(&wait.json, "json", false, "print the run as JSON")
	f.BoolVar(&wait.wide, "wide", false, "print more fields")
	return cmd
}

// readPrompt is args[0], or stdin for "-" or no argument when stdin is not
// a terminal. A prompt over run.MaxInputBytes is refused here, before
// anything is written (and before more of stdin is read).
func readPrompt(stdin io.Reader, args []string) (string, error) {
	if len(args) == 1 && args[0] != "-" {
		return args[0], checkPromptSize(len(args[0]))
	}
	if len(args) == 0 {
		if f, ok := stdin.(*os.File); ok && isTerminal(f) {
			return "", errors.New("no prompt: pass PROMPT, or pipe it in")
		}
	}
	b, err := io.ReadAll(io.LimitReader(stdin, run.MaxInputBytes+1))
	if err != nil {
		return "", fmt.Errorf("read the prompt from stdin: %w", err)
	}
	if len(b) > run.MaxInputBytes {
		return "", fmt.Errorf("the prompt on stdin is more than %d bytes (%s): kern accepts no more", run.MaxInputBytes, humanBytes(run.MaxInputBytes))
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", errors.New("no prompt: stdin was empty")
	}
	return string(b), nil
}

// checkPromptSize refuses a prompt of n bytes over run.MaxInputBytes.
func checkPromptSize(n int) error {
	if n > run.MaxInputBytes {
		return fmt.Errorf("the prompt is %d bytes, more than %d (%s): kern accepts no more", n, run.MaxInputBytes, humanBytes(run.MaxInputBytes))
	}
	return nil
}

// humanBytes is n for people: 512 B, 64 KiB, 1 MiB (whole units only).
func humanBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func parseMetadata(kvs []string) (map[string]any, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--metadata %q: want key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

func newGetCmd(withDB dbRunner) *cobra.Command {
	var events, transcript, tree, jsonOut, wide bool
	var tenant string
	cmd := &cobra.Command{
		Use:   "get RUN_ID",
		Short: "Print a run (--events: and its event log; --transcript: and its messages; --tree: and the runs below it)",
		Long: `Prints the run: its fields, then its content. --events adds the event log,
--transcript one line per message (calls and tool results shortened), --tree
the runs below it (its children, theirs, …) with status and tokens, and the
tree's total tokens. With --json the run is the API's JSON object; --events
then adds JSON lines, --tree one JSON object per run below, and --transcript
its lines, after a blank line.`,
		Example: `  kern runs get "$id"
  kern runs get --tree "$id"
  kern runs get --transcript "$id"
  kern runs get --json "$id" | jq .metrics`,
		Args: cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			ctx, w := cmd.Context(), cmd.OutOrStdout()
			v, id, err := openRun(ctx, d, args[0], tenant)
			if err != nil {
				return err
			}
			out, err := v.GetRun(ctx, id)
			if err != nil {
				return err
			}
			if err := newPrinter(w, jsonOut, wide).run(out); err != nil {
				return err
			}
			if events {
				fmt.Fprintln(w)
				if err := printStoredEvents(cmd, v, id, 0, jsonOut); err != nil {
					return err
				}
			}
			if tree {
				below, err := runTree(ctx, v, out.RunID)
				if err != nil {
					return err
				}
				fmt.Fprintln(w)
				if err := printTree(w, newPrinter(w, jsonOut, wide), out, below); err != nil {
					return err
				}
			}
			if !transcript {
				return nil
			}
			msgs, err := v.Messages(ctx, id)
			if err != nil {
				return err
			}
			return printTranscript(w, msgs)
		}),
	}
	cmd.Flags().BoolVar(&events, "events", false, "also print the run's event log")
	cmd.Flags().BoolVar(&transcript, "transcript", false, "also print the run's transcript, one line per message")
	cmd.Flags().BoolVar(&tree, "tree", false, "also print the runs below the run (children at any depth), with status and tokens")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the run as JSON")
	cmd.Flags().BoolVar(&wide, "wide", false, "print more fields")
	tenantFlag(cmd, &tenant, tenantReadUsage)
	return cmd
}

func newListCmd(withDB dbRunner) *cobra.Command {
	var (
		params        run.ListParams
		statuses      []string
		since         time.Duration
		jsonOut, wide bool
		tenant        string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first, without their content",
		Long: `Lists runs newest first, --limit a page, without their content (kern runs
get RUN_ID prints a run whole): a table, or with --json an array of the
API's run objects without "content". The short ids of the table name one
run each (of --tenant's runs, or of all): get, wait, cancel and events
take them, or any unique prefix of an id. A TENANT column shows when runs
of tenants are listed. When there are more, a hint with the --cursor of
the next page goes to stderr. --since keeps runs created in that window
(then there is no next page past it).`,
		Example: `  kern runs list --status running,waiting
  kern runs list --agent writer --since 1h --wide
  kern runs list --tenant acme
  kern runs list --json --limit 100 | jq -r '.[].run_id'`,
		Args: cobra.NoArgs,
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, _ []string) error {
			for _, s := range statuses {
				params.Statuses = append(params.Statuses, run.Status(s))
			}
			if since < 0 {
				return errors.New("--since must not be negative")
			}
			v, err := viewOf(d, tenant)
			if err != nil {
				return err
			}
			page, err := v.ListRuns(cmd.Context(), params)
			if err != nil {
				return err
			}
			runs, next := page.Runs, page.NextCursor
			if since > 0 {
				cutoff := time.Now().Add(-since)
				for i, r := range runs {
					if r.CreatedAt.Before(cutoff) { // newest first: the rest are older still
						runs, next = runs[:i], ""
						break
					}
				}
			}
			var ids []string
			tenants := false
			if !jsonOut && !wide {
				if ids, err = listShortIDs(cmd.Context(), d, tenant, runs); err != nil {
					return err
				}
			}
			for _, r := range runs {
				tenants = tenants || (tenant == "" && r.TenantID != "")
			}
			if err := newPrinter(cmd.OutOrStdout(), jsonOut, wide).runs(runs, ids, tenants); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: kern runs list --cursor %s (with the same filters)\n", next)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&statuses, "status", nil, "only these statuses (pending,running,waiting,completed,error,cancelled)")
	f.StringVar(&params.AgentName, "agent", "", "only this agent's runs")
	f.StringVar(&params.SessionID, "session", "", "only this session's runs")
	f.StringVar(&params.Name, "name", "", "only runs of this name")
	f.DurationVar(&since, "since", 0, "only runs created this long ago or less")
	f.IntVar(&params.Limit, "limit", 50, "runs per page (at most 1000)")
	f.StringVar(&params.Cursor, "cursor", "", "the cursor of the next page, from the previous page's hint")
	f.BoolVar(&jsonOut, "json", false, "print a JSON array of runs")
	f.BoolVar(&wide, "wide", false, "more columns: full id, tenant, session, attempt, tokens")
	tenantFlag(cmd, &tenant, "only this tenant's runs (default: every tenant's and the operator's own)")
	return cmd
}

func newCancelCmd(withDB dbRunner) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: `Cancel a run: prints "cancelled", "no such run yet: cancel recorded" (exit 0) or "already finished: STATUS" (exit 1)`,
		Long: `Asks for the run to be cancelled, and says what happened:
"cancelled" (exit 0): the run is cancelled (or was already);
"no such run yet: cancel recorded" (exit 0): no run has that id (or a
prefix of it): a run submitted with that id later ends cancelled;
"already finished: completed" (or error, exit 1): it had ended and nothing
changed. RUN_ID may be a unique prefix of a run's id (kern runs list's
short ids); with --tenant, only that tenant's runs are looked at and
touched.`,
		Example: `  kern runs cancel "$id"
  kern runs cancel 01970c6e-8f`,
		Args: cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			ctx := cmd.Context()
			v, err := viewOf(d, tenant)
			if err != nil {
				return err
			}
			id, err := resolveRunID(ctx, d, args[0], tenant)
			if errors.Is(err, run.ErrNotFound) {
				id, err = args[0], nil // cancel before start: the request waits for the run
			}
			if err != nil {
				return err
			}
			res, err := v.CancelRunResult(ctx, id)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch res.Outcome {
			case db.CancelRecorded:
				fmt.Fprintln(w, "no such run yet: cancel recorded")
			case db.CancelAlreadyFinished:
				fmt.Fprintln(w, "already finished:", res.Status)
				return &exitErr{code: exitError}
			default:
				fmt.Fprintln(w, "cancelled")
			}
			return nil
		}),
	}
	tenantFlag(cmd, &tenant, "look RUN_ID up among this tenant's runs, and cancel only a run of this tenant (default: any run)")
	return cmd
}

func newClearCmd(withDB dbRunner) *cobra.Command {
	var (
		olderThan time.Duration
		statuses  []string
		dryRun    bool
	)
	cmd := &cobra.Command{
		Use:   "clear",
		Short: "Delete finished runs (never pending, running or waiting ones)",
		Long: `Deletes runs that finished at least --older-than ago, of the given terminal
statuses (default all three). --dry-run counts them instead, by paging
through kern runs list, and deletes nothing.`,
		Example: `  kern runs clear --older-than 24h
  kern runs clear --status error,cancelled --older-than 0 --dry-run`,
		Args: cobra.NoArgs,
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, _ []string) error {
			if olderThan < 0 {
				return fmt.Errorf("--older-than %v is negative: want how long ago a run finished, at least (e.g. 24h, or 0 for any time)", olderThan)
			}
			p := run.DeleteParams{OlderThan: olderThan}
			for _, s := range statuses {
				st := run.Status(s)
				if !st.Terminal() {
					return fmt.Errorf("--status %q: only completed, error and cancelled runs can be cleared", s)
				}
				p.Statuses = append(p.Statuses, st)
			}
			if !dryRun {
				n, err := d.DeleteRuns(cmd.Context(), p)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %d runs\n", n)
				return nil
			}
			n, err := countDeletable(cmd, d, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "would delete %d runs (dry run)\n", n)
			return nil
		}),
	}
	cmd.Flags().DurationVar(&olderThan, "older-than", time.Hour, "only runs finished at least this long ago")
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "only these terminal statuses (default: completed,error,cancelled)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "count what would be deleted, delete nothing")
	return cmd
}

// countDeletable counts the runs DeleteRuns(p) would delete, paging
// through ListRuns (db offers no count).
func countDeletable(cmd *cobra.Command, d *db.DB, p run.DeleteParams) (int, error) {
	lp := run.ListParams{Statuses: p.Statuses, Limit: 1000}
	if len(lp.Statuses) == 0 {
		lp.Statuses = []run.Status{run.StatusCompleted, run.StatusError, run.StatusCancelled}
	}
	cutoff := time.Now().Add(-p.OlderThan)
	n := 0
	for {
		page, err := d.ListRuns(cmd.Context(), lp)
		if err != nil {
			return 0, err
		}
		for _, r := range page.Runs {
			if r.FinishedAt != nil && !r.FinishedAt.After(cutoff) {
				n++
			}
		}
		if page.NextCursor == "" {
			return n, nil
		}
		lp.Cursor = page.NextCursor
	}
}

// printStoredEvents prints the events the run's log holds now.
func printStoredEvents(cmd *cobra.Command, d runsView, id string, after int64, jsonOut bool) error {
	events, err := d.StoredEvents(cmd.Context(), id, after)
	if err != nil {
		return err
	}
	for _, ev := range events {
		if err := printEvent(cmd.OutOrStdout(), ev, jsonOut); err != nil {
			return err
		}
	}
	return nil
}
