package server_test

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/server"
)

// uiClient is a dashboard client, signed in with key unless it is empty,
// that does not follow redirects.
type uiClient struct {
	t    *testing.T
	base *url.URL
	key  string
}

func newUIClient(t *testing.T, e *env, key string) *uiClient {
	base, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	return &uiClient{t: t, base: base, key: key}
}

// do sends method to ref (resolved against the server's URL, as a browser
// resolves a link) with the session cookie and, when form is not nil, the
// form.
func (c *uiClient) do(method, ref string, form url.Values) response {
	c.t.Helper()
	u, err := c.base.Parse(ref)
	if err != nil {
		c.t.Fatalf("resolve %q: %v", ref, err)
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.key != "" {
		req.AddCookie(&http.Cookie{Name: "kern_session", Value: c.key})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// pageLink is a URL a page links to or posts to.
type pageLink struct {
	tag, class, value string
	csrf              string // a form's hidden csrf input
}

// pageLinks parses page and returns every href, src and action in it.
func pageLinks(t *testing.T, page []byte) []pageLink {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("parse the page: %v", err)
	}
	var links []pageLink
	var walk func(n *html.Node, form int)
	walk = func(n *html.Node, form int) {
		if n.Type == html.ElementNode {
			attr := map[string]string{}
			for _, a := range n.Attr {
				attr[a.Key] = a.Val
			}
			for _, k := range []string{"href", "src", "action"} {
				if v, ok := attr[k]; ok {
					links = append(links, pageLink{tag: n.Data, class: attr["class"], value: v})
					if n.Data == "form" {
						form = len(links) - 1
					}
				}
			}
			if n.Data == "input" && attr["name"] == "csrf" && form >= 0 {
				links[form].csrf = attr["value"]
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, form)
		}
	}
	walk(doc, -1)
	return links
}

// runURL splits a dashboard URL under /ui/runs/ into its decoded path
// segments after /ui/runs/; ok is false for other URLs. It fails the test
// for a run URL with a query or fragment, which an id cut short would
// leave behind.
func runURL(t *testing.T, ref string) (segs []string, ok bool) {
	t.Helper()
	u, err := url.Parse(ref)
	if err != nil {
		t.Fatalf("link %q: %v", ref, err)
	}
	rest, ok := strings.CutPrefix(u.EscapedPath(), "/ui/runs/")
	if !ok {
		return nil, false
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Host != "" {
		t.Errorf("run link %q has a query, fragment or host", ref)
	}
	for _, s := range strings.Split(rest, "/") {
		d, err := url.PathUnescape(s)
		if err != nil {
			t.Errorf("link %q: segment %q: %v", ref, s, err)
		}
		segs = append(segs, d)
	}
	return segs, true
}

// Run ids, call ids and schedule names with '/', '?', '#', '%', '&' and
// spaces: every link and form of the dashboard names them as one path
// segment each, and posting the Approve form approves that call of that
// run, and nothing else.
func TestUIEscapesIDsInURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	const runID = "team/a b?c#d%e&f=1;.."
	const callID = "call 1&x=y;z+é:@'" // safe for storage, still needs escaping
	const victim = "team"              // what a cut-short id would name
	e.model.Script(func(req fakellm.Request) fakellm.Reply {
		for _, m := range req.Messages {
			if m.Role == "tool" {
				return fakellm.Reply{Content: "moved"}
			}
		}
		return fakellm.Reply{ToolCalls: []fakellm.ToolCall{{ID: callID, Name: "transfer", Arguments: `{"amount":5}`}}}
	})
	for _, id := range []string{victim, runID} {
		r := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "pay", "run_id": id}).expect(t, http.StatusAccepted)
		if loc := r.header.Get("Location"); loc != "/v1/runs/"+url.PathEscape(id) {
			t.Errorf("Location %q, want the id escaped", loc)
		}
		if st := e.wait(t, e.acme, url.PathEscape(id))["status"]; st != "waiting" {
			t.Fatalf("run %q is %v, want waiting", id, st)
		}
	}
	e.do(t, e.acme, "PUT", "/v1/schedules/"+url.PathEscape("nightly/a b?c#d%e"),
		map[string]any{"agent": "assistant", "prompt": "p", "cron": "0 3 * * *"}).expect(t, http.StatusOK)

	c := newUIClient(t, e, e.acme)
	var approve pageLink
	forms := map[string]bool{}
	page := c.do("GET", "/ui/runs/"+url.PathEscape(runID), nil).expect(t, http.StatusOK)
	for _, l := range pageLinks(t, page.body) {
		segs, ok := runURL(t, l.value)
		if !ok {
			continue
		}
		switch {
		case segs[0] != runID:
			t.Errorf("%s %q names run %q, want %q", l.tag, l.value, segs[0], runID)
		case len(segs) == 2 && segs[1] == "cancel" && l.tag == "form":
			forms["cancel"] = true
		case len(segs) == 4 && segs[1] == "tool-calls" && segs[2] == callID && l.tag == "form":
			forms[segs[3]] = true
			if segs[3] == "approve" {
				approve = l
			}
		default:
			t.Errorf("%s %q: unexpected path %q", l.tag, l.value, segs)
		}
	}
	for _, f := range []string{"cancel", "approve", "reject", "result"} {
		if !forms[f] {
			t.Errorf("the run page has no %s form for run %q, call %q: %s", f, runID, callID, page.body)
		}
	}
	var listed []string
	for _, path := range []string{"/ui/runs", "/ui/runs?fragment=1", "/ui/schedules"} {
		for _, l := range pageLinks(t, c.do("GET", path, nil).expect(t, http.StatusOK).body) {
			if segs, ok := runURL(t, l.value); ok {
				if len(segs) != 1 {
					t.Errorf("%s links to %q", path, l.value)
				}
				listed = append(listed, segs[0])
			}
		}
	}
	slices.Sort(listed)
	if want := []string{victim, victim, runID, runID}; !slices.Equal(listed, want) {
		t.Errorf("the run lists link to runs %q, want %q", listed, want)
	}

	// A hostile call id in a dashboard or API URL is refused as such.
	hostile := "/tool-calls/" + url.PathEscape("../../"+victim+"/tool-calls/"+callID+"/approve?") + "/approve"
	if r := c.do("POST", "/ui/runs/"+url.PathEscape(runID)+hostile, url.Values{"csrf": {approve.csrf}}); r.status != http.StatusBadRequest {
		t.Errorf("dashboard approve of a hostile call id: %d, want 400: %s", r.status, r.body)
	}
	e.do(t, e.acme, "POST", "/v1/runs/"+url.PathEscape(runID)+hostile, nil).expectProblem(t, http.StatusBadRequest)

	// The Approve form approves that call of that run.
	if approve.csrf == "" {
		t.Fatal("the approve form carries no csrf token")
	}
	r := c.do("POST", approve.value, url.Values{"csrf": {approve.csrf}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/runs/"+url.PathEscape(runID) {
		t.Fatalf("approve: %d to %q, want 303 to the run: %s", r.status, r.header.Get("Location"), r.body)
	}
	if st := e.wait(t, e.acme, url.PathEscape(runID))["status"]; st != "completed" {
		t.Fatalf("approved run is %v, want completed", st)
	}
	if n := e.transfers.Load(); n != 1 {
		t.Errorf("transfer called %d times, want 1", n)
	}
	if st := e.do(t, e.acme, "GET", "/v1/runs/"+victim, nil).expect(t, http.StatusOK).object(t)["status"]; st != "waiting" {
		t.Errorf("the other run %q is %v, want still waiting", victim, st)
	}
}
