package server_test

import (
	"net/http"
	"testing"

	"github.com/kern-go/kern/server"
)

// A browser pointed at the server's root finds the dashboard, not a 404;
// other unknown paths stay 404 problems.
func TestRootRedirectsToTheDashboard(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	c := newUIClient(t, e, "")
	for _, method := range []string{"GET", "HEAD"} {
		r := c.do(method, "/", nil)
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/" {
			t.Errorf("%s /: %d to %q, want 303 to /ui/", method, r.status, r.header.Get("Location"))
		}
	}
	if r := c.do("GET", "/ui/", nil); r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/runs" {
		t.Errorf("GET /ui/: %d to %q, want 303 to /ui/runs", r.status, r.header.Get("Location"))
	}
	e.do(t, "", "GET", "/nope", nil).expectProblem(t, http.StatusNotFound)
	e.do(t, "", "POST", "/", nil).expectProblem(t, http.StatusMethodNotAllowed)
}
