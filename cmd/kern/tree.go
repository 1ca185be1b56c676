package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// treeRun is a run below the root of a printed tree, at its depth (1: a
// child of the root).
type treeRun struct {
	out   *run.Output
	depth int
}

// runTree reads the runs below root, depth first, children newest first
// (ListRuns' order), through v: a tenant's view sees its own tree only.
// It reads at most db.MaxRunDepth levels.
func runTree(ctx context.Context, v runsView, rootID string) ([]treeRun, error) {
	var below []treeRun
	var walk func(id string, depth int) error
	walk = func(id string, depth int) error {
		if depth > db.MaxRunDepth {
			return nil
		}
		cursor := ""
		for {
			page, err := v.ListRuns(ctx, run.ListParams{ParentRunID: id, Limit: 200, Cursor: cursor})
			if err != nil {
				return err
			}
			for _, child := range page.Runs {
				below = append(below, treeRun{out: child, depth: depth})
				if err := walk(child.RunID, depth+1); err != nil {
					return err
				}
			}
			if page.NextCursor == "" {
				return nil
			}
			cursor = page.NextCursor
		}
	}
	if err := walk(rootID, 1); err != nil {
		return nil, err
	}
	return below, nil
}

// printTree prints the runs below root: one line each, indented by depth,
// with agent, status and tokens, then the tree's total tokens (the root's
// and every run's below it: a run's own figures are its own). With JSON,
// each run below is one JSON object per line instead.
func printTree(w io.Writer, p *printer, root *run.Output, below []treeRun) error {
	if p.json {
		for _, r := range below {
			if err := printRunJSON(w, r.out); err != nil {
				return err
			}
		}
		return nil
	}
	total := root.Metrics.TotalTokens
	fmt.Fprintf(w, "%s  %s  %s  %d tokens\n", root.RunID, root.AgentName, p.status(root.Status), root.Metrics.TotalTokens)
	for _, r := range below {
		total += r.out.Metrics.TotalTokens
		fmt.Fprintf(w, "%s└ %s  %s  %s  %d tokens\n", strings.Repeat("  ", r.depth-1), r.out.RunID, r.out.AgentName, p.status(r.out.Status), r.out.Metrics.TotalTokens)
	}
	_, err := fmt.Fprintf(w, "%d runs, %d tokens in all\n", len(below)+1, total)
	return err
}
