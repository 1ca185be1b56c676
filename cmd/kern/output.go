package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// Exit codes of kern (documented in runs wait's help and the README).
const (
	exitError     = 1 // any error; runs wait: the run ended as error
	exitCancelled = 2 // runs wait: the run ended cancelled
	exitTimedOut  = 3 // runs wait: --timeout passed first
	exitWaiting   = 4 // runs wait: the run waits for an answer to a tool call
)

// exitErr ends kern with code after printing msg (when not empty) to
// stderr.
type exitErr struct {
	code int
	msg  string
}

func (e *exitErr) Error() string { return e.msg }

// exitCode is the process exit code for err (nil: 0).
func exitCode(err error) int {
	var e *exitErr
	if errors.As(err, &e) {
		return e.code
	}
	if err != nil {
		return exitError
	}
	return 0
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// useColor: only on a terminal, and never with NO_COLOR set
// (https://no-color.org).
func useColor(w io.Writer) bool {
	_, noColor := os.LookupEnv("NO_COLOR")
	return !noColor && isTerminal(w)
}

// statusColors all have the same length, so tabwriter columns stay aligned.
var statusColors = map[run.Status]string{
	run.StatusPending:   "\x1b[33m",
	run.StatusRunning:   "\x1b[34m",
	run.StatusWaiting:   "\x1b[35m",
	run.StatusCompleted: "\x1b[32m",
	run.StatusError:     "\x1b[31m",
	run.StatusCancelled: "\x1b[90m",
}

// printer writes runs for people (tables) or scripts (--json).
type printer struct {
	w     io.Writer
	json  bool
	wide  bool
	color bool
	now   time.Time
}

func newPrinter(w io.Writer, jsonOut, wide bool) *printer {
	return &printer{w: w, json: jsonOut, wide: wide, color: useColor(w), now: time.Now()}
}

func (p *printer) status(s run.Status) string {
	c, ok := statusColors[s]
	if !p.color || !ok {
		return string(s)
	}
	return c + string(s) + "\x1b[0m"
}

// runJSON is the run as API.md shows it (db.MarshalRun).
func runJSON(out *run.Output) (json.RawMessage, error) { return db.MarshalRun(out) }

// printRunJSON writes one run as API.md's JSON object.
func printRunJSON(w io.Writer, out *run.Output) error {
	js, err := runJSON(out)
	if err != nil {
		return err
	}
	return writeIndented(w, js)
}

// printRunsJSON writes runs as a JSON array of summaries: API.md's
// objects without "content" (a listing is a summary, as its table is;
// kern runs get prints a run whole).
func printRunsJSON(w io.Writer, runs []*run.Output) error {
	arr := make([]json.RawMessage, len(runs))
	for i, r := range runs {
		summary := *r
		summary.Content = ""
		js, err := runJSON(&summary)
		if err != nil {
			return err
		}
		// The first such bytes are the run's own field: in a string value
		// the quotes would be escaped, and metadata comes after content.
		arr[i] = bytes.Replace(js, []byte(`"content":"",`), nil, 1)
	}
	js, err := json.Marshal(arr)
	if err != nil {
		return err
	}
	return writeIndented(w, js)
}

func writeIndented(w io.Writer, js []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, js, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// run prints one run: JSON, or a field per line followed by its content.
func (p *printer) run(out *run.Output) error {
	if p.json {
		return printRunJSON(p.w, out)
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", out.RunID)
	row("status", p.status(out.Status))
	row("agent", out.AgentName)
	row("name", out.Name)
	row("session", out.SessionID)
	row("created", p.ago(out.CreatedAt))
	if out.StartedAt != nil {
		row("started", p.ago(*out.StartedAt))
	}
	if out.FinishedAt != nil {
		row("finished", p.ago(*out.FinishedAt))
	}
	if out.Metrics.Duration > 0 {
		row("duration", humanDuration(out.Metrics.Duration))
	}
	if out.Attempt > 1 || p.wide {
		row("attempt", strconv.Itoa(out.Attempt))
	}
	if m := out.Metrics; m.TotalTokens > 0 {
		row("tokens", fmt.Sprintf("%d (%d in, %d out)", m.TotalTokens, m.InputTokens, m.OutputTokens))
	}
	if p.wide {
		if m := out.Metrics; m.TimeToFirstToken > 0 {
			row("ttft", humanDuration(m.TimeToFirstToken))
		}
		row("turns", strconv.Itoa(out.Metrics.ModelTurns))
		row("tool calls", strconv.Itoa(out.Metrics.ToolCalls))
		if len(out.Metadata) > 0 {
			js, _ := json.Marshal(out.Metadata)
			row("metadata", string(js))
		}
	}
	for _, c := range out.Waiting {
		row("waiting on", c.ID+" "+c.Name+"("+oneLine(compactJSON(c.Arguments))+")")
	}
	if out.Status == run.StatusError {
		row("error", oneLine(out.Error))
	} else {
		row("note", oneLine(out.Error)) // why a pending run waits, or a retried one's last error
	}
	row("input", firstLine(out.Input, 200))
	if err := tw.Flush(); err != nil {
		return err
	}
	if out.Content != "" {
		_, err := fmt.Fprintf(p.w, "\n%s\n", strings.TrimRight(out.Content, "\n"))
		return err
	}
	return nil
}

// runs prints runs as a table (without their content; ids as given, nil:
// shortIDs; a TENANT column when tenants is set), or a JSON array of
// summaries (listJSON).
func (p *printer) runs(runs []*run.Output, ids []string, tenants bool) error {
	if p.json {
		return printRunsJSON(p.w, runs)
	}
	if ids == nil {
		ids = shortIDs(runs)
	}
	tenants = tenants || p.wide
	tenantCol := func(r *run.Output) string {
		if !tenants {
			return ""
		}
		return dash(r.TenantID) + "\t"
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	head := "ID\t"
	if tenants {
		head += "TENANT\t"
	}
	if p.wide {
		fmt.Fprintln(tw, head+"STATUS\tAGENT\tNAME\tSESSION\tCREATED\tDURATION\tATTEMPT\tTOKENS\tINPUT")
	} else {
		fmt.Fprintln(tw, head+"STATUS\tAGENT\tNAME\tCREATED\tDURATION\tINPUT")
	}
	for i, r := range runs {
		dur := "-"
		if r.Metrics.Duration > 0 {
			dur = humanDuration(r.Metrics.Duration)
		}
		name := dash(r.Name)
		if p.wide {
			fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.RunID, tenantCol(r), p.status(r.Status), r.AgentName, name,
				dash(r.SessionID), p.ago(r.CreatedAt), dur, r.Attempt, r.Metrics.TotalTokens, firstLine(r.Input, 80))
		} else {
			fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\t%s\t%s\n", ids[i], tenantCol(r), p.status(r.Status), r.AgentName, name,
				p.ago(r.CreatedAt), dur, firstLine(r.Input, 40))
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortIDs are the runs' ids cut to shortIDLen.
func shortIDs(runs []*run.Output) []string {
	n := shortIDLen(runs)
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.RunID[:min(n, len(r.RunID))]
	}
	return ids
}

// shortIDLen is the shortest prefix length, at least 8 bytes, that no two
// ids of the listing share.
func shortIDLen(runs []*run.Output) int {
	const minLen = 8
	n := minLen
	for i := range runs {
		for j := i + 1; j < len(runs); j++ {
			a, b := runs[i].RunID, runs[j].RunID
			k := 0
			for k < len(a) && k < len(b) && a[k] == b[k] {
				k++
			}
			n = max(n, k+1)
		}
	}
	return n
}

// ago is t relative to the printer's now: "3s ago", "5m ago", "2h ago",
// "4d ago"; "just now" under a second.
func (p *printer) ago(t time.Time) string {
	return ago(p.now.Sub(t))
}

func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// humanDuration is d for people: 350ms, 1.2s, 42s, 3m5s, 2h10m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.String()
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// printEvent writes one event: a JSON line, or seq, type and data.
func printEvent(w io.Writer, ev run.Event, jsonOut bool) error {
	if jsonOut {
		js, err := json.Marshal(struct {
			RunID string          `json:"run_id"`
			Seq   int64           `json:"seq"`
			Type  run.EventType   `json:"type"`
			Data  json.RawMessage `json:"data"`
			At    time.Time       `json:"at"`
		}{ev.RunID, ev.Seq, ev.Type, dataOrNull(ev.Data), ev.At.UTC()})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", js)
		return err
	}
	_, err := fmt.Fprintf(w, "%-4d %-16s %s\n", ev.Seq, ev.Type, compactJSON(string(dataOrNull(ev.Data))))
	return err
}

func dataOrNull(d json.RawMessage) json.RawMessage {
	if len(d) == 0 {
		return json.RawMessage("null")
	}
	return d
}
