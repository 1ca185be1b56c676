package server_test

// Browser tests of the dashboard (/ui/): a real headless Chromium, one per
// test, driven over the DevTools protocol by chromedp, held to the DOM
// contract the dashboard's pages follow (ids, classes, data attributes and
// forms; see ui.go and ui/templates). They wait with chromedp's queries and
// in-page polls, each bounded, and never sleep. Without a Chromium on PATH
// they skip; .ci/run installs Debian's.
//
// Every step leaves a screenshot, TestName-NN-step.png: in $KERN_ARTIFACTS
// when it is set (created if need be, kept), else in the test's temporary
// directory (removed with it).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kern-go/kern/server"
)

const (
	browserTimeout = 3 * time.Minute  // all of one test's browsing: bounds a hang, not a speed
	stepTimeout    = 20 * time.Second // one step of it
)

// browser is one test's Chromium, on one tab, against one env's server.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab's; ends with the test or after browserTimeout
	base  string          // the server's base URL
	dir   string          // where screenshots go
	shots int

	mu      sync.Mutex
	console []string // what the pages wrote to the console
	thrown  []string // uncaught exceptions of the pages' scripts
}

// chromiumPath finds Chromium, or skips the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium (nor chromium-browser) on PATH: .ci/run installs it (apt-get install chromium)")
	return ""
}

// newBrowser starts a fresh Chromium (its own profile) for the test; it is
// closed when the test ends. A test whose pages threw an uncaught exception
// fails.
func newBrowser(t *testing.T, e *env) *browser {
	t.Helper()
	path := chromiumPath(t)
	b := &browser{t: t, base: e.url, dir: os.Getenv("KERN_ARTIFACTS")}
	if b.dir == "" {
		b.dir = t.TempDir()
	} else if err := os.MkdirAll(b.dir, 0o755); err != nil {
		t.Fatalf("KERN_ARTIFACTS: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelTab := chromedp.NewContext(actx)
	stop := func() {
		_ = chromedp.Cancel(bctx)
		cancelTab()
		cancelAlloc()
		cancel()
	}
	if err := chromedp.Do(bctx); err != nil { // starts the browser and opens the tab
		stop()
		t.Fatalf("start %s: %v", path, err)
	}
	b.ctx = bctx

	messages := chromedp.Console(bctx)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for m, err := range messages {
			if err != nil {
				return
			}
			line := m.String()
			if m.URL != "" {
				line += fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
			}
			b.mu.Lock()
			b.console = append(b.console, line)
			if m.IsException() {
				b.thrown = append(b.thrown, line)
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-read:
		case <-time.After(5 * time.Second):
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, line := range b.console {
			t.Log("console: " + line)
		}
		if len(b.thrown) > 0 {
			t.Errorf("the dashboard's script threw:\n%s", strings.Join(b.thrown, "\n"))
		}
	})
	return b
}

// step is a context for one step: the tab's, bounded by stepTimeout.
func (b *browser) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, stepTimeout)
}

// fail takes a screenshot and logs where the page is and what it says,
// then fails the test.
func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		name := filepath.Join(b.dir, b.t.Name()+"-FAILED.png")
		if os.WriteFile(name, buf, 0o644) == nil && os.Getenv("KERN_ARTIFACTS") != "" {
			b.t.Logf("screenshot of the failure: %s", name)
		}
	}
	if where, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 3000)`)); err == nil {
		b.t.Logf("the page at the failure: %s", where)
	}
	b.t.Fatal(msg)
}

// do runs the actions, failing the test if one fails.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, what, expr string) T {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("%s: %v", what, err)
	}
	return v
}

// poll waits, at most timeout, until the JavaScript expression is truthy in
// the page, and returns its value. A navigation meanwhile fails it.
func poll[T any](b *browser, what, expr string, timeout time.Duration) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.fail("waiting %v for %s: %v", timeout, what, err)
	}
	return v
}

// open navigates to path on the server and returns the document's response
// (after redirects).
func (b *browser) open(path string) *network.Response {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.fail("open %s: %v", path, err)
	}
	return res
}

// follow runs action, which must navigate (a click on a link or a submit
// button), and returns the response of the page it leads to, after
// redirects. A click that misses because a live update swapped the node
// away under it is tried again.
func (b *browser) follow(what string, action chromedp.Action[chromedp.Void]) *network.Response {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	for attempt := 1; ; attempt++ {
		res, err := chromedp.RunResponse(ctx, action)
		if err == nil {
			return res
		}
		if attempt == 3 || ctx.Err() != nil {
			b.fail("%s: %v", what, err)
		}
		b.t.Logf("%s: %v; again", what, err)
	}
}

// shot saves a screenshot of the whole page as TestName-NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot %s: %v", name, err)
	}
	b.shots++
	file := filepath.Join(b.dir, fmt.Sprintf("%s-%02d-%s.png", b.t.Name(), b.shots, name))
	if err := os.WriteFile(file, buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// path is the page's path and query.
func (b *browser) path() string {
	b.t.Helper()
	return eval[string](b, "location", `location.pathname + location.search`)
}

// expectPage fails the test unless res answered status and the page is at
// path (no query).
func (b *browser) expectPage(what string, res *network.Response, status int, path string) {
	b.t.Helper()
	u, err := url.Parse(res.URL)
	if err != nil {
		b.fail("%s: response URL %q: %v", what, res.URL, err)
	}
	if int(res.Status) != status || u.Path != path {
		b.fail("%s: got %d at %s, want %d at %s", what, res.Status, u.Path, status, path)
	}
}

// mark tags the page's window, so that unchanged can tell the page was not
// reloaded since.
func (b *browser) mark() {
	b.t.Helper()
	eval[bool](b, "mark the page", `(window.__kernTestMark = "kern-test-mark") !== ""`)
}

// unchanged fails the test if the page was reloaded or left since mark.
func (b *browser) unchanged(what string) {
	b.t.Helper()
	if !eval[bool](b, "read the mark", `window.__kernTestMark === "kern-test-mark"`) {
		b.fail("%s: the page was reloaded (it must update in place)", what)
	}
}

// jsChecks is the prelude of a contract check: P collects the problems;
// need(sel) wants an element matching sel, says(sel, text) one whose text
// is text, and labelled(el) tells whether el has a label.
const jsChecks = `
const P = [];
const need = (sel) => { const el = document.querySelector(sel); if (!el) P.push("missing " + sel); return el; };
const says = (sel, text) => {
  const found = [...document.querySelectorAll(sel)].map(el => el.textContent.trim());
  if (!found.includes(text)) P.push("no " + sel + " saying " + JSON.stringify(text) + (found.length ? " (found " + JSON.stringify(found) + ")" : ""));
};
const labelled = (el) => !!el && ((el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]')) ||
  (el.getAttribute("aria-label") || "").trim() || (el.getAttribute("aria-labelledby") || "").trim());
`

// check evaluates a contract check (statements over jsChecks) and fails
// the test, going on, with every problem it found.
func (b *browser) check(what, body string) {
	b.t.Helper()
	problems := eval[[]string](b, what, "(() => {"+jsChecks+body+"\nreturn P; })()")
	if len(problems) > 0 {
		b.t.Errorf("%s does not follow the dashboard's contract:\n  %s", what, strings.Join(problems, "\n  "))
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

const loginContract = `
need('form#login[method="post" i][action="/ui/login"]');
says('label[for="key"]', "API key");
need('form#login input#key[name="key"][type="password"]');
says('form#login button[type="submit"]', "Sign in");
need('form#login input[type="hidden"][name="csrf"]');
`

const signedInContract = `
need('form#logout[method="post" i][action="/ui/logout"]');
need('form#logout input[type="hidden"][name="csrf"]');
need('nav a[href="/ui/runs"]');
need('nav a[href="/ui/schedules"]');
`

const runsContract = `
need('form#filters[method="get" i]');
need('form#filters select#status[name="status"]');
need('form#filters input#agent[name="agent"]');
need('form#filters input#session[name="session_id"]');
need('form#filters input#name[name="name"]');
for (const id of ["status", "agent", "session", "name"]) need('label[for="' + id + '"]');
const options = [...document.querySelectorAll("select#status option")].map(o => o.value);
if (options.join() !== ",pending,running,waiting,completed,error,cancelled")
  P.push("select#status has the options " + JSON.stringify(options) + ', want ["","pending","running","waiting","completed","error","cancelled"]');
need("table#runs > tbody");
for (const tr of document.querySelectorAll("tr.run")) {
  const id = tr.dataset.runId, st = tr.dataset.status;
  if (!tr.closest("table#runs > tbody")) P.push("tr.run " + id + " is not in table#runs > tbody");
  if (!id || !st) { P.push("tr.run without data-run-id or data-status: " + tr.outerHTML.slice(0, 200)); continue; }
  if (!tr.querySelector('a.run-link[href="/ui/runs/' + id + '"]')) P.push("tr.run " + id + ": no a.run-link to /ui/runs/" + id);
  const td = tr.querySelector("td.status");
  if (!td || td.textContent.trim() !== st) P.push("tr.run " + id + ": td.status says " + JSON.stringify(td && td.textContent.trim()) + ", data-status " + st);
}
`

// cancelForm is what a run page's check says of the cancel form.
type cancelForm int

const (
	cancelAny    cancelForm = iota // nothing (the page is live, the form may be on its way out)
	cancelWanted                   // the run is not terminal: the form is there
	cancelGone                     // the run is terminal: no form
)

// runContract is the check of the run page of id.
func runContract(id string, cancel cancelForm) string {
	s := `
const st = need("span#status[data-status]");
if (st && st.textContent.trim() !== st.dataset.status) P.push("span#status says " + JSON.stringify(st.textContent.trim()) + " but data-status is " + st.dataset.status);
need("pre#content");
need("ol#events");
need("section#transcript");
need("dl#metrics");
for (const li of document.querySelectorAll("ol#events > li")) if (!li.matches("li.event[data-seq][data-type]")) P.push("ol#events has " + li.outerHTML.slice(0, 120));
`
	switch cancel {
	case cancelWanted:
		s += `need('form#cancel[method="post" i][action="/ui/runs/' + ` + js(id) + ` + '/cancel"]');
says('form#cancel button[type="submit"]', "Cancel run");
need('form#cancel input[type="hidden"][name="csrf"]');
`
	case cancelGone:
		s += `if (document.querySelector("form#cancel")) P.push("a terminal run has form#cancel");
`
	}
	return s
}

// waitingContract is the check of the forms for the waiting call.
func waitingContract(call string) string {
	return `const sel = '.waiting-call[data-call-id="' + CSS.escape(` + js(call) + `) + '"] ';
const box = need(sel.trim());
if (box) {
  need(sel + 'form.approve[method="post" i]');
  says(sel + 'form.approve button[type="submit"]', "Approve");
  need(sel + 'form.reject[method="post" i]');
  const reason = need(sel + 'form.reject input[name="reason"]');
  if (reason && !labelled(reason)) P.push("the reject form's reason input has no label");
  says(sel + 'form.reject button[type="submit"]', "Reject");
  need(sel + 'form.answer[method="post" i]');
  const output = need(sel + 'form.answer textarea[name="output"]');
  if (output && !labelled(output)) P.push("the answer form's output textarea has no label");
  says(sel + 'form.answer button[type="submit"]', "Submit result");
  for (const f of box.querySelectorAll("form")) if (!f.querySelector('input[type="hidden"][name="csrf"]')) P.push("form." + f.className + " has no hidden csrf input");
}
`
}

// statusIs is a poll expression: the run page shows status st.
func statusIs(st string) string {
	return `(document.querySelector("#status") || {dataset: {}}).dataset.status === ` + js(st)
}

// signIn signs in with key on the sign-in form, as a person does, and
// expects the run list.
func (b *browser) signIn(key string) {
	b.t.Helper()
	b.expectPage("the sign-in page", b.open("/ui/login"), http.StatusOK, "/ui/login")
	b.do("type the key", chromedp.WaitVisible(chromedp.CSS("#key")), chromedp.SendKeys(chromedp.CSS("#key"), key))
	res := b.follow("sign in", chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	b.expectPage("signed in", res, http.StatusOK, "/ui/runs")
	b.do("the run list", chromedp.WaitVisible(chromedp.CSS("table#runs")))
}

// sessionCookie is the browser's kern_session cookie, nil without one.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/ui/"}})
	if err != nil {
		b.fail("read cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "kern_session" {
			return c
		}
	}
	return nil
}

// apiRun is the run as the API shows it to key.
func apiRun(t *testing.T, e *env, key, id string) map[string]any {
	t.Helper()
	return e.do(t, key, "GET", "/v1/runs/"+id, nil).expect(t, http.StatusOK).object(t)
}

func TestBrowserSignInAndWatchARun(t *testing.T) {
	e := newEnv(t, server.Config{})
	b := newBrowser(t, e)

	b.expectPage("the sign-in page", b.open("/ui/login"), http.StatusOK, "/ui/login")
	b.check("the sign-in page", loginContract)
	b.shot("login")
	b.signIn(e.acme)
	b.shot("runs")
	c := b.sessionCookie()
	switch {
	case c == nil:
		t.Error("signed in, the browser has no kern_session cookie")
	case !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict:
		t.Errorf("kern_session cookie: HttpOnly %v, SameSite %q; want HttpOnly, Strict", c.HTTPOnly, c.SameSite)
	}
	if strings.Contains(eval[string](b, "document.cookie", "document.cookie"), "kern_session") {
		t.Error("the page's script can read kern_session (document.cookie)")
	}
	b.check("the run list", signedInContract+runsContract)

	// A run submitted through the API shows up in the list by itself.
	b.mark()
	// 60 words at 20 ms stream in 1.2 s, no more than the list may take to
	// show the row (it refreshes once a second), and under a loaded CI the
	// run page could open on a completed run: 150 words keep it streaming
	// for 3 s.
	id := e.submit(t, e.acme, "[fake:drip=20ms,words=150] stream please")
	row := `tr.run[data-run-id="` + id + `"]`
	poll[bool](b, "the new run's row", `!!document.querySelector(`+js(row)+`)`, 5*time.Second)
	b.unchanged("the run list")
	b.check("the run list with a run", runsContract)
	b.shot("run-listed")

	res := b.follow("open the run from its row", chromedp.Click(chromedp.CSS(row+" a.run-link")))
	b.expectPage("the run page", res, http.StatusOK, "/ui/runs/"+id)
	b.mark()
	n := poll[int](b, "content streaming in while the run is running",
		`(() => { const s = document.querySelector("#status"), c = document.querySelector("#content");
		  return !!s && !!c && s.dataset.status === "running" && c.textContent.length; })()`, 10*time.Second)
	poll[bool](b, "#content to grow while the run is running (deltas over SSE)",
		`(() => { const s = document.querySelector("#status"), c = document.querySelector("#content");
		  return s.dataset.status === "running" && c.textContent.length > `+fmt.Sprint(n)+`; })()`, 10*time.Second)
	b.shot("streaming")
	poll[bool](b, "the run page to show completed", statusIs("completed"), 15*time.Second)
	b.unchanged("the run page")
	b.shot("completed")

	run := e.wait(t, e.acme, id)
	if run["status"] != "completed" {
		t.Fatalf("the API says the run is %v", run["status"])
	}
	want, _ := run["content"].(string)
	got := eval[string](b, "#content", `document.querySelector("#content").textContent`)
	if got != want || want == "" {
		t.Errorf("#content is %q,\nthe API's content %q", got, want)
	}
	t.Logf("#content had %d of its %d characters when first seen running", n, len(want))
	b.check("the run page", signedInContract+runContract(id, cancelAny)+`
const seqs = [...document.querySelectorAll("ol#events > li.event")].map(li => Number(li.dataset.seq));
for (let i = 1; i < seqs.length; i++) if (!(seqs[i] > seqs[i - 1])) { P.push("ol#events data-seq not increasing: " + JSON.stringify(seqs)); break; }
for (const type of ["run.started", "content.delta", "run.completed"])
  if (!document.querySelector('ol#events > li.event[data-type="' + type + '"]')) P.push("ol#events has no " + type);
`)

	// A fresh load agrees with the live page.
	b.expectPage("the run page, reloaded", b.open("/ui/runs/"+id), http.StatusOK, "/ui/runs/"+id)
	b.check("the completed run page", runContract(id, cancelGone)+`if (need("#status") && document.querySelector("#status").dataset.status !== "completed") P.push("#status is not completed");`)
	if again := eval[string](b, "#content", `document.querySelector("#content").textContent`); again != want {
		t.Errorf("reloaded, #content is %q, want %q", again, want)
	}

	// At phone width, the run list does not scroll sideways.
	b.expectPage("the run list", b.open("/ui/runs"), http.StatusOK, "/ui/runs")
	b.do("emulate a phone", chromedp.EmulateViewport(390, 844))
	if w := eval[int](b, "scrollWidth", `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at 390 px wide the run list is %d px wide: it scrolls sideways", w)
	}
	b.shot("phone")
	b.do("leave the phone", chromedp.ResetViewport())

	// /ui/ is the run list; the nav leads to the schedules; signing out ends
	// the session.
	b.expectPage("/ui/", b.open("/ui/"), http.StatusOK, "/ui/runs")
	res = b.follow("the nav's Schedules link", chromedp.Click(chromedp.CSS(`nav a[href="/ui/schedules"]`)))
	b.expectPage("the schedules", res, http.StatusOK, "/ui/schedules")
	b.check("the schedules page", signedInContract+`need("table#schedules");`)
	b.shot("schedules")
	res = b.follow("sign out", chromedp.Click(chromedp.CSS(`form#logout button[type="submit"]`)))
	b.expectPage("signed out", res, http.StatusOK, "/ui/login")
	b.expectPage("the run list, signed out", b.open("/ui/runs"), http.StatusOK, "/ui/login")
	b.shot("signed-out")
}

func TestBrowserCancelARun(t *testing.T) {
	e := newEnv(t, server.Config{})
	b := newBrowser(t, e)
	b.signIn(e.acme)

	id := e.submit(t, e.acme, "[fake:hang] hang")
	b.expectPage("the run page", b.open("/ui/runs/"+id), http.StatusOK, "/ui/runs/"+id)
	poll[bool](b, "the run page to show running", statusIs("running"), 15*time.Second)
	b.check("the running run's page", runContract(id, cancelWanted))
	b.shot("running")

	res := b.follow("click Cancel run", chromedp.Click(chromedp.CSS(`form#cancel button[type="submit"]`)))
	b.expectPage("after the cancel", res, http.StatusOK, "/ui/runs/"+id)
	poll[bool](b, "the run page to show cancelled", statusIs("cancelled"), 15*time.Second)
	b.shot("cancelled")
	if st := e.wait(t, e.acme, id)["status"]; st != "cancelled" {
		t.Errorf("the API says the run is %v, want cancelled", st)
	}

	b.expectPage("the run page, reloaded", b.open("/ui/runs/"+id), http.StatusOK, "/ui/runs/"+id)
	b.check("the cancelled run's page", runContract(id, cancelGone)+`if (need("#status") && document.querySelector("#status").dataset.status !== "cancelled") P.push("#status is not cancelled");`)
}

func TestBrowserApproveAWaitingRun(t *testing.T) {
	e := newEnv(t, server.Config{})
	b := newBrowser(t, e)
	b.signIn(e.acme)

	id := e.submit(t, e.acme, approvalPrompt)
	b.expectPage("the run page", b.open("/ui/runs/"+id), http.StatusOK, "/ui/runs/"+id)
	poll[bool](b, "the run page to show waiting, with a call", statusIs("waiting")+` && !!document.querySelector(".waiting-call")`, 15*time.Second)
	run := apiRun(t, e, e.acme, id)
	waiting, _ := run["waiting"].([]any)
	if run["status"] != "waiting" || len(waiting) != 1 {
		t.Fatalf("the API says the run is %v waiting on %v", run["status"], run["waiting"])
	}
	call, _ := waiting[0].(map[string]any)["id"].(string)
	b.check("the waiting run's page", runContract(id, cancelWanted)+waitingContract(call))
	b.shot("waiting")
	if e.transfers.Load() != 0 {
		t.Fatal("the tool ran before its approval")
	}

	approve := `.waiting-call[data-call-id="` + call + `"] form.approve button[type="submit"]`
	res := b.follow("click Approve", chromedp.Click(chromedp.CSS(approve)))
	b.expectPage("after the approval", res, http.StatusOK, "/ui/runs/"+id)
	poll[bool](b, "the run page to show completed", statusIs("completed"), 15*time.Second)
	b.shot("completed")
	if n := e.transfers.Load(); n != 1 {
		t.Errorf("the tool ran %d times, want 1", n)
	}
	if st := e.wait(t, e.acme, id)["status"]; st != "completed" {
		t.Errorf("the API says the run is %v, want completed", st)
	}

	b.expectPage("the run page, reloaded", b.open("/ui/runs/"+id), http.StatusOK, "/ui/runs/"+id)
	b.check("the approved run's page", runContract(id, cancelGone)+`if (document.querySelector(".waiting-call")) P.push("a completed run still shows .waiting-call");`)
}

func TestBrowserSecondTenantSeesNothing(t *testing.T) {
	e := newEnv(t, server.Config{})
	acme := []string{e.submit(t, e.acme, "[fake:words=3] first"), e.submit(t, e.acme, "[fake:words=3] second")}
	for _, id := range acme {
		e.wait(t, e.acme, id)
	}
	b := newBrowser(t, e)

	// A bad key is refused on the form.
	b.expectPage("the sign-in page", b.open("/ui/login"), http.StatusOK, "/ui/login")
	b.do("type a bad key", chromedp.SendKeys(chromedp.CSS("#key"), "kern_not-a-key"))
	res := b.follow("sign in with a bad key", chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	if u, _ := url.Parse(res.URL); u == nil || u.Path != "/ui/login" {
		t.Errorf("a bad key led to %s, want the sign-in form again", res.URL)
	}
	b.do("the error", chromedp.WaitVisible(chromedp.CSS(`p#error[role="alert"]`)))
	b.check("the refused sign-in", loginContract)
	if c := b.sessionCookie(); c != nil && c.Value != "" {
		t.Error("a bad key set a kern_session cookie")
	}
	b.shot("bad-key")

	// globex's list has none of acme's runs, now or after it refreshes.
	b.signIn(e.globex)
	noAcme := `(() => { const html = document.documentElement.outerHTML; return [` + js(acme[0]) + `, ` + js(acme[1]) + `].filter(id => html.includes(id)); })()`
	if n := eval[int](b, "count the rows", `document.querySelectorAll("tr.run").length`); n != 0 {
		t.Errorf("globex's run list has %d tr.run, want none", n)
	}
	if found := eval[[]string](b, "acme's ids", noAcme); len(found) > 0 {
		t.Errorf("globex's run list shows acme's runs %v", found)
	}
	b.shot("globex-runs")

	b.mark()
	own := e.submit(t, e.globex, "[fake:hang] globex's own")
	row := `tr.run[data-run-id="` + own + `"]`
	poll[bool](b, "globex's own run in its list", `!!document.querySelector(`+js(row)+`)`, 5*time.Second)
	if n := eval[int](b, "count the rows", `document.querySelectorAll("tr.run").length`); n != 1 {
		t.Errorf("globex's run list has %d tr.run, want its one run", n)
	}
	if found := eval[[]string](b, "acme's ids", noAcme); len(found) > 0 {
		t.Errorf("globex's refreshed run list shows acme's runs %v", found)
	}
	if r := e.do(t, e.globex, "POST", "/v1/runs/"+own+"/cancel", nil); r.status >= 300 {
		t.Fatalf("cancel globex's run: %d %s", r.status, r.body)
	}
	poll[bool](b, "globex's run to show cancelled in the list", `(() => { const tr = document.querySelector(`+js(row)+`);
	  return !!tr && tr.dataset.status === "cancelled" && tr.querySelector("td.status").textContent.trim() === "cancelled"; })()`, 5*time.Second)
	b.unchanged("the run list")
	b.shot("globex-own-run")

	// acme's run page is not found for globex.
	res = b.open("/ui/runs/" + acme[0])
	if res.Status != http.StatusNotFound {
		t.Errorf("globex opening acme's run: status %d, want 404", res.Status)
	}
	if eval[bool](b, "#status", `!!document.querySelector("#status")`) {
		t.Error("globex opening acme's run sees a #status")
	}
	if text := eval[string](b, "the page's text", `document.body.innerText`); !strings.Contains(strings.ToLower(text), "not found") {
		t.Errorf("globex opening acme's run: the page does not say not found: %q", text)
	}
	if found := eval[[]string](b, "acme's content", `[...document.querySelectorAll("#content, #events, #transcript")].map(el => el.id)`); len(found) > 0 {
		t.Errorf("globex opening acme's run sees %v", found)
	}
	b.shot("acme-run-not-found")
}

// accessibilityCheck finds, in the page: inputs, selects and textareas
// without a label, buttons without text, no lang on <html>, and text whose
// WCAG 2 contrast ratio with the background under it is below 4.5. Colours
// come from getComputedStyle, normalised to sRGB through a 1×1 canvas; the
// background is the nearest non-transparent background-color of the element
// and its ancestors (translucent ones composited, over white); background
// images and opacity are not considered.
const accessibilityCheck = `(() => {
const P = [];
const where = (el) => {
  const parts = [];
  for (let e = el; e && e.nodeType === 1 && parts.length < 5; e = e.parentElement) {
    let s = e.tagName.toLowerCase();
    if (e.id) { parts.unshift(s + "#" + e.id); break; }
    if (e.classList.length) s += "." + [...e.classList].join(".");
    const same = e.parentElement ? [...e.parentElement.children].filter(c => c.tagName === e.tagName) : [];
    if (same.length > 1) s += ":nth-of-type(" + (same.indexOf(e) + 1) + ")";
    parts.unshift(s);
  }
  return parts.join(" > ");
};
if (!(document.documentElement.getAttribute("lang") || "").trim()) P.push("<html> has no lang");
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden") continue;
  const ok = (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]')) ||
    (el.getAttribute("aria-label") || "").trim() || (el.getAttribute("aria-labelledby") || "").trim();
  if (!ok) P.push(where(el) + ": no <label for> nor aria-label");
}
for (const el of document.querySelectorAll("button")) {
  if (!el.textContent.trim() && !(el.getAttribute("aria-label") || "").trim()) P.push(where(el) + ": a button without text");
}
const canvas = document.createElement("canvas");
canvas.width = canvas.height = 1;
const g = canvas.getContext("2d", { willReadFrequently: true });
const rgba = (css) => {
  g.clearRect(0, 0, 1, 1);
  g.fillStyle = "rgba(0, 0, 0, 0)";
  g.fillStyle = css;
  g.fillRect(0, 0, 1, 1);
  const d = g.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], d[3] / 255];
};
const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
const backdrop = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let bg = [255, 255, 255, 1];
  for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
  return bg;
};
const luminance = (c) => {
  const [r, gr, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * gr + 0.0722 * b;
};
const hex = (c) => "#" + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, "0")).join("");
for (const el of document.body.querySelectorAll("*")) {
  if (["SCRIPT", "STYLE", "OPTION", "NOSCRIPT", "TEMPLATE"].includes(el.tagName)) continue;
  const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join("").trim();
  if (!text) continue;
  const cs = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  if (cs.visibility !== "visible" || el.getClientRects().length === 0 || box.width < 2 || box.height < 2) continue;
  const bg = backdrop(el), fg = over(rgba(cs.color), bg);
  const l1 = luminance(fg), l2 = luminance(bg);
  const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  if (ratio < 4.5) P.push(where(el) + ": contrast " + ratio.toFixed(2) + " (" + hex(fg) + " on " + hex(bg) + ") " + JSON.stringify(text.slice(0, 40)));
}
return P;
})()`

// accessible runs accessibilityCheck on the page, failing the test (going
// on) with what it found.
func (b *browser) accessible(page string) {
	b.t.Helper()
	if problems := eval[[]string](b, "the accessibility check", accessibilityCheck); len(problems) > 0 {
		b.t.Errorf("%s: %d accessibility problems:\n  %s", page, len(problems), strings.Join(problems, "\n  "))
	}
}

func TestBrowserAccessibility(t *testing.T) {
	e := newEnv(t, server.Config{})
	done := e.submit(t, e.acme, "[fake:words=12] hello")
	waiting := e.submit(t, e.acme, approvalPrompt)
	e.wait(t, e.acme, done)
	if st := e.wait(t, e.acme, waiting)["status"]; st != "waiting" {
		t.Fatalf("the approval run is %v, want waiting", st)
	}
	b := newBrowser(t, e)

	b.expectPage("the sign-in page", b.open("/ui/login"), http.StatusOK, "/ui/login")
	b.accessible("the sign-in page")
	b.shot("login")
	b.do("type a bad key", chromedp.SendKeys(chromedp.CSS("#key"), "kern_not-a-key"))
	b.follow("sign in with a bad key", chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	b.do("the error", chromedp.WaitVisible(chromedp.CSS("#error")))
	b.accessible("the sign-in page with an error")
	b.shot("login-error")

	b.signIn(e.acme)
	poll[bool](b, "both runs in the list", `document.querySelectorAll("tr.run").length === 2`, 5*time.Second)
	b.accessible("the run list")
	b.shot("runs")

	b.expectPage("the waiting run", b.open("/ui/runs/"+waiting), http.StatusOK, "/ui/runs/"+waiting)
	b.do("the waiting call", chromedp.WaitVisible(chromedp.CSS(".waiting-call")))
	b.accessible("the waiting run's page")
	b.shot("run-waiting")

	b.expectPage("the completed run", b.open("/ui/runs/"+done), http.StatusOK, "/ui/runs/"+done)
	b.accessible("the completed run's page")
	b.shot("run-completed")
}
