package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// eventsFunc is db.DB.Events (a test puts a failing one in its place).
type eventsFunc func(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error]

// follow reads the run's events after seq after, calling on for each, until
// on says stop, the log ends (a terminal event), or ctx ends. When the
// iterator fails (a lost connection Events could not ride out) it is
// reopened from the last seq seen, so nothing is lost or repeated. An
// unknown run or a bad argument is returned at once.
func follow(ctx context.Context, events eventsFunc, runID string, after int64, on func(run.Event) (stop bool, err error)) error {
	for failures := 0; ; failures++ {
		var iterErr error
		for ev, err := range events(ctx, runID, after) {
			if err != nil {
				iterErr = err
				break
			}
			failures = 0
			after = ev.Seq
			stop, err := on(ev)
			if err != nil || stop {
				return err
			}
			if ev.Type.Terminal() {
				return nil
			}
		}
		switch {
		case iterErr == nil:
			return nil // the run is terminal and every event was read
		case ctx.Err() != nil:
			return fmt.Errorf("kern: events of run %q: %w", runID, context.Cause(ctx))
		case errors.Is(iterErr, run.ErrNotFound), errors.Is(iterErr, run.ErrInvalidArgument):
			return iterErr
		}
		pause := min(time.Duration(failures+1)*200*time.Millisecond, 2*time.Second)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kern: events of run %q: %w", runID, context.Cause(ctx))
		case <-time.After(pause):
		}
	}
}

// followContent writes the run's content to w as it streams (content.delta
// events from the first), and notes retries on errw. It returns once the
// run is terminal, or waits for an answer (waitingNow says so: a run.waiting
// event in the log may have been answered long since).
func followContent(ctx context.Context, events eventsFunc, waitingNow func(context.Context) (bool, error), runID string, w, errw io.Writer) error {
	return follow(ctx, events, runID, 0, func(ev run.Event) (bool, error) {
		switch ev.Type {
		case run.EventContentDelta:
			var d struct {
				Delta string `json:"delta"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return false, fmt.Errorf("kern: event %d of run %q: %w", ev.Seq, runID, err)
			}
			_, err := io.WriteString(w, d.Delta)
			return false, err
		case run.EventRunRetrying, run.EventRunReleased, run.EventOutputRejected:
			fmt.Fprintf(errw, "\nkern: %s %s; the content starts afresh\n", ev.Type, compactJSON(string(dataOrNull(ev.Data))))
		case run.EventRunWaiting:
			return waitingNow(ctx)
		}
		return false, nil
	})
}

// spin shows a spinner with label and the time elapsed on w while the
// caller waits, only when w is a terminal. stop clears it.
func spin(w io.Writer, label string) (stop func()) {
	if !isTerminal(w) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		frames := []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
		start := time.Now()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, "\r%c %s %s ", frames[i%len(frames)], label, humanDuration(time.Since(start).Truncate(100*time.Millisecond)))
			select {
			case <-done:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// waitOpts are the flags of runs wait (and of runs submit --wait/--follow).
type waitOpts struct {
	wait, follow, json, wide bool
	timeout                  time.Duration
}

func newWaitCmd(withDB dbRunner) *cobra.Command {
	var o waitOpts
	var tenant string
	cmd := &cobra.Command{
		Use:   "wait RUN_ID",
		Short: "Wait until a run is terminal or waits for an answer, then print it",
		Long: `Waits for the run, then prints it (--json: the run's JSON). A spinner shows
on a terminal meanwhile. --follow prints the content as it streams instead,
exactly as stored (no run summary), and a newline after it unless it ends
with one.

Exit codes: 0 completed, 1 error (or kern failed: unknown id, bad flags),
2 cancelled, 3 --timeout passed first (the run as it is now is printed),
4 the run waits for an answer to a tool call.`,
		Example: `  kern runs wait 01970c6e-8f5e-7b3a-9c1d-2e4f6a8b0c1d
  kern runs wait --timeout 30s --json "$id" | jq -r .content
  kern runs wait --follow "$id"`,
		Args: cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			v, id, err := openRun(cmd.Context(), d, args[0], tenant)
			if err != nil {
				return err
			}
			return waitFor(cmd, v, id, o)
		}),
	}
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "give up after this long (exit 3); 0 waits as long as it takes")
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "print the content as it streams")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the run as JSON")
	cmd.Flags().BoolVar(&o.wide, "wide", false, "print more fields")
	tenantFlag(cmd, &tenant, tenantReadUsage)
	return cmd
}

// waitFor waits for run id as o says, prints it, and returns runs wait's
// exit (waitResult).
func waitFor(cmd *cobra.Command, d runsView, id string, o waitOpts) error {
	if o.follow && o.json {
		return errors.New("--follow prints the content; it does not mix with --json")
	}
	ctx := cmd.Context()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	var out *run.Output
	var err error
	if o.follow {
		waitingNow := func(ctx context.Context) (bool, error) {
			o, err := d.GetRun(ctx, id)
			return err == nil && o.Status == run.StatusWaiting, err
		}
		w := &lastByteWriter{w: cmd.OutOrStdout()}
		err = followContent(ctx, d.Events, waitingNow, id, w, cmd.ErrOrStderr())
		if w.last != 0 && w.last != '\n' { // the shell's prompt on a line of its own
			fmt.Fprintln(w)
		}
		if err == nil {
			out, err = d.GetRun(ctx, id)
		}
	} else {
		stop := spin(cmd.ErrOrStderr(), "waiting for "+id)
		out, err = d.WaitRun(ctx, id)
		stop()
	}
	if err != nil {
		if o.timeout > 0 && errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil {
			now, gerr := d.GetRun(cmd.Context(), id)
			if gerr != nil {
				return gerr
			}
			if !o.follow {
				if perr := newPrinter(cmd.OutOrStdout(), o.json, o.wide).run(now); perr != nil {
					return perr
				}
			}
			return &exitErr{exitTimedOut, fmt.Sprintf("kern: timed out after %s waiting for run %s (%s)", o.timeout, id, now.Status)}
		}
		return err
	}
	if !o.follow {
		if err := newPrinter(cmd.OutOrStdout(), o.json, o.wide).run(out); err != nil {
			return err
		}
	}
	return waitResult(out)
}

// waitResult is runs wait's exit for a run that stopped waiting.
func waitResult(out *run.Output) error {
	switch out.Status {
	case run.StatusCompleted:
		return nil
	case run.StatusError:
		return &exitErr{exitError, fmt.Sprintf("kern: run %s ended as error: %s", out.RunID, out.Error)}
	case run.StatusCancelled:
		return &exitErr{exitCancelled, fmt.Sprintf("kern: run %s was cancelled", out.RunID)}
	case run.StatusWaiting:
		calls := make([]string, len(out.Waiting))
		for i, c := range out.Waiting {
			calls[i] = c.ID + " " + c.Name
		}
		return &exitErr{exitWaiting, fmt.Sprintf("kern: run %s waits for an answer to %s", out.RunID, strings.Join(calls, ", "))}
	}
	return &exitErr{exitError, fmt.Sprintf("kern: run %s is %s", out.RunID, out.Status)}
}

func newEventsCmd(withDB dbRunner) *cobra.Command {
	var after int64
	var followFlag, jsonOut bool
	var tenant string
	cmd := &cobra.Command{
		Use:   "events RUN_ID",
		Short: "Print a run's event log, one line per event (seq, type, data)",
		Long: `Prints the run's stored events after --after, one line each: seq, type and
data (--json: one JSON object per line). --follow goes on printing new
events until the run is terminal, resuming by seq after a lost connection.`,
		Example: `  kern runs events "$id"
  kern runs events --follow --after 12 "$id"
  kern runs events --json "$id" | jq -r 'select(.type=="tool.call").data.name'`,
		Args: cobra.ExactArgs(1),
		RunE: withDB(func(cmd *cobra.Command, d *db.DB, args []string) error {
			ctx, w := cmd.Context(), cmd.OutOrStdout()
			if after < 0 {
				return errors.New("--after must not be negative")
			}
			v, id, err := openRun(ctx, d, args[0], tenant)
			if err != nil {
				return err
			}
			if followFlag {
				return follow(ctx, v.Events, id, after, func(ev run.Event) (bool, error) {
					return false, printEvent(w, ev, jsonOut)
				})
			}
			return printStoredEvents(cmd, v, id, after, jsonOut)
		}),
	}
	cmd.Flags().Int64Var(&after, "after", 0, "only events after this seq")
	cmd.Flags().BoolVarP(&followFlag, "follow", "f", false, "keep printing new events until the run is terminal")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON lines")
	tenantFlag(cmd, &tenant, tenantReadUsage)
	return cmd
}

// lastByteWriter remembers the last byte written through it (0: none).
type lastByteWriter struct {
	w    io.Writer
	last byte
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.last = p[n-1]
	}
	return n, err
}
