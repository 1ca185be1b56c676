package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/kern-go/kern/run"
)

// maxOutputRunes is how much of a tool result's first line the transcript
// shows.
const maxOutputRunes = 200

// printTranscript writes msgs one line each: the seq, the role, and
//   - for an assistant turn that called tools, each call as name(arguments);
//   - for a tool result, the call id and the output's first line, trimmed
//     and cut to maxOutputRunes, with "…" when anything was left out;
//   - otherwise the content, its line breaks written as \n.
//
// It is preceded by a blank line, which parts it from the run's JSON.
func printTranscript(w io.Writer, msgs []run.Message) error {
	var b strings.Builder
	b.WriteString("\n")
	for _, m := range msgs {
		var text string
		switch {
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			calls := make([]string, len(m.ToolCalls))
			for i, c := range m.ToolCalls {
				calls[i] = c.Name + "(" + oneLine(compactJSON(c.Arguments)) + ")"
			}
			text = strings.Join(calls, ", ")
		case m.Role == "tool":
			text = m.ToolCallID + ": " + firstLine(m.Content, maxOutputRunes)
		default:
			text = oneLine(m.Content)
		}
		fmt.Fprintf(&b, "%d %-9s %s\n", m.Seq, m.Role, text)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// compactJSON is args without insignificant white space, or as written
// when it is not valid JSON (the model's text is kept, valid or not).
func compactJSON(args string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(args)); err != nil {
		return args
	}
	return b.String()
}

// oneLine writes s's line breaks as \n, so a message stays on its line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\n`).Replace(s)
}

// firstLine is s's first non-blank line, trimmed and cut to max runes,
// with "…" appended when anything of s was left out.
func firstLine(s string, max int) string {
	line, rest, _ := strings.Cut(strings.TrimSpace(s), "\n")
	line = strings.TrimSpace(line)
	cut := rest != ""
	if r := []rune(line); len(r) > max {
		line, cut = strings.TrimSpace(string(r[:max])), true
	}
	if cut {
		line += "…"
	}
	return line
}
