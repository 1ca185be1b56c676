package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
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
