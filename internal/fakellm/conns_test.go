package fakellm

import (
	"io"
	"net/http"
	"testing"
)

func TestConnectionsCountsTCPConnections(t *testing.T) {
	s := New()
	base, stop, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	get := func(c *http.Client) {
		t.Helper()
		resp, err := c.Get(base + "/models")
		if err != nil {
			t.Fatal(err)
		}
		// Read to EOF: only then does the transport reuse the connection.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	pooled := &http.Client{Transport: &http.Transport{}}
	defer pooled.CloseIdleConnections()
	for range 3 {
		get(pooled)
	}
	if got := s.Connections(); got != 1 {
		t.Fatalf("3 requests on one pooled client: %d connections, want 1", got)
	}
	get(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}})
	if got := s.Connections(); got != 2 {
		t.Fatalf("after a request on a new client: %d connections, want 2", got)
	}
}
