package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/kern-go/kern/internal/kerntest"
)

// startServe starts "kern serve" on a free port of 127.0.0.1 over a fresh
// database, with env added, and returns its base URL; the process is
// interrupted when the test ends.
func startServe(t *testing.T, ctx context.Context, env ...string) string {
	t.Helper()
	url := kerntest.DatabaseURL(t)
	cmd := exec.CommandContext(ctx, kernBinary(t), "serve", "--addr", "127.0.0.1:0", "--database-url", url)
	cmd.Env = append(append(os.Environ(), noModelEnv...), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() { // read to the end, so the process never blocks on a full pipe
			line := sc.Text()
			if _, rest, ok := strings.Cut(line, "kern serve listening"); ok {
				if _, a, ok := strings.Cut(rest, "addr="); ok {
					addr <- strings.Fields(a)[0]
				}
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatal("kern serve ended without listening")
		}
		return a
	case <-ctx.Done():
		t.Fatal("kern serve did not say where it listens")
	}
	return ""
}

// getNoRedirect GETs url, not following a redirect.
func getNoRedirect(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// kern serve's GET /metrics has the server's own kern_* families, not
// only Go's runtime metrics: scraped from a real kern serve process.
func TestServeMetricsHaveKernFamilies(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, time.Minute)
	base := startServe(t, ctx)
	if res := getNoRedirect(t, ctx, base+"/"); res.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /: %d, want 303", res.StatusCode)
	} else {
		res.Body.Close()
	}
	res := getNoRedirect(t, ctx, base+"/metrics")
	defer res.Body.Close()
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for _, name := range []string{"kern_http_server_requests_total", "kern_http_server_duration_seconds", "go_goroutines"} {
		if fams[name] == nil {
			var kern []string
			for n := range fams {
				if strings.HasPrefix(n, "kern_") {
					kern = append(kern, n)
				}
			}
			t.Errorf("kern serve's /metrics has no %s; its kern_ families: %v", name, kern)
		}
	}
	found := false
	for _, m := range fams["kern_http_server_requests_total"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "http_route" && l.GetValue() == "/{$}" {
				found = m.GetCounter().GetValue() == 1
			}
		}
	}
	if !found {
		t.Errorf("kern_http_server_requests_total does not count GET / once: %v", fams["kern_http_server_requests_total"])
	}
}

// KERN_BEHIND_TLS=true makes the dashboard's cookies Secure on plain HTTP
// (behind a TLS-terminating proxy); a value that is not a boolean is an
// error, not ignored.
func TestServeBehindTLS(t *testing.T) {
	t.Parallel()
	ctx := kerntest.Context(t, time.Minute)
	for env, secure := range map[string]bool{"KERN_BEHIND_TLS=true": true, "KERN_BEHIND_TLS=": false} {
		base := startServe(t, ctx, env)
		res := getNoRedirect(t, ctx, base+"/ui/login")
		res.Body.Close()
		var login *http.Cookie
		for _, c := range res.Cookies() {
			if c.Name == "kern_login" {
				login = c
			}
		}
		if login == nil || login.Secure != secure {
			t.Errorf("%s: login cookie %v, want Secure %v", env, login, secure)
		}
	}
	r := runKern(t, ctx, "", []string{"KERN_BEHIND_TLS=maybe"}, "serve", "--addr", "127.0.0.1:0", "--database-url", "postgres://nowhere.invalid/x")
	if r.code == 0 || !strings.Contains(r.stderr, "KERN_BEHIND_TLS") {
		t.Errorf("KERN_BEHIND_TLS=maybe: exit %d, stderr %q; want an error naming it", r.code, r.stderr)
	}
}
