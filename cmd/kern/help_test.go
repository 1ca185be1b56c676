package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// TestHelpHidesDatabasePassword: no --help shows the password of the
// DATABASE_URL in the environment (a flag's default is printed by --help).
func TestHelpHidesDatabasePassword(t *testing.T) {
	const password = "s3cret-Pa55word"
	t.Setenv("DATABASE_URL", "postgres://kern:"+password+"@db.example:5432/kern?sslmode=disable")
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(newRootCmd(), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{}, path...), "--help"))
		if err := root.Execute(); err != nil {
			t.Fatalf("kern %s --help: %v", strings.Join(path, " "), err)
		}
		if strings.Contains(out.String(), password) {
			t.Errorf("kern %s --help shows the password:\n%s", strings.Join(path, " "), out.String())
		}
		if !strings.Contains(out.String(), "--database-url") && len(path) > 0 && path[0] != "version" && path[0] != "completion" && path[0] != "help" {
			t.Errorf("kern %s --help: no --database-url flag:\n%s", strings.Join(path, " "), out.String())
		}
	}
}

// TestMessagesNameTheFlags: errors name the flags as the user typed them,
// not cobra's flag groups nor Go's field names.
func TestMessagesNameTheFlags(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, 60*time.Second)
	url := kerntest.DatabaseURL(t)
	d := kerntest.Open(t, url)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "--config", "agents.yaml", "--agent", "a"}, "kern: --config and --agent do not mix"},
		{[]string{"worker", "--config", "agents.yaml", "--model", "m"}, "kern: --config and --model do not mix"},
		{[]string{"runs", "clear", "--older-than", "-5s"}, "kern: --older-than -5s is negative"},
	} {
		r := kernExec(t, ctx, url, "", tc.args...)
		if r.code != 1 || !strings.HasPrefix(r.stderr, tc.want) || strings.Contains(r.stderr, "group") {
			t.Errorf("kern %v: exit %d, stderr %q; want %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// The Go API's words are the same: no Go field name.
	_, err := d.DeleteRuns(ctx, run.DeleteParams{OlderThan: -5 * time.Second})
	if !errors.Is(err, run.ErrInvalidArgument) || !strings.Contains(err.Error(), "older than -5s is negative") {
		t.Fatalf("DeleteRuns with a negative OlderThan: %v", err)
	}
	if _, err := d.StoredEvents(ctx, "x", -1); !errors.Is(err, run.ErrInvalidArgument) || !strings.Contains(err.Error(), "after seq -1 is negative") {
		t.Fatalf("StoredEvents after -1: %v", err)
	}
}
