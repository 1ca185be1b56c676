package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The kern binary, built once per test process, by TestMain before any
// test runs (buildKernBinary).
var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// kernBinary returns the path of a kern binary built from this package
// (buildKernBinary, once).
func kernBinary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(buildKernBinary)
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// buildKernBinary builds the kern binary into a temporary directory named
// kern-cli-test-*; leftovers of earlier test processes older than an hour
// are removed first. TestMain builds it before any test starts, so no
// test's deadline includes a build (which takes a minute and more on a
// fresh clone on a loaded machine).
func buildKernBinary() {
	if old, _ := filepath.Glob(filepath.Join(os.TempDir(), "kern-cli-test-*")); len(old) > 0 {
		for _, dir := range old {
			if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > time.Hour {
				_ = os.RemoveAll(dir)
			}
		}
	}
	dir, err := os.MkdirTemp("", "kern-cli-test-")
	if err != nil {
		binaryErr = err
		return
	}
	binaryPath = filepath.Join(dir, "kern")
	out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
	if err != nil {
		binaryErr = errors.New("go build: " + err.Error() + "\n" + string(out))
	}
}

// kernResult is what a kern process did.
type kernResult struct {
	stdout, stderr string
	code           int
}

// runKern runs the kern binary with args (and stdin, when not empty) to
// completion, with env added to the test's environment.
func runKern(t testing.TB, ctx context.Context, stdin string, env []string, args ...string) kernResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, kernBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := kernResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kern %s: %v", strings.Join(args, " "), err)
	}
	return res
}
