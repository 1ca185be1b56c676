package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/server"
)

// BenchmarkDashboardEventLag: how long after a run's content is written the
// run page in a real (headless) Chromium shows it, and what the page weighs.
// The bench plays the worker of one run (claim, then one content append at
// a time, the next once the page showed the last); the page follows the
// run over SSE, and a MutationObserver in it stamps when each delta's text
// appears (Date.now(): wall clock, whole ms, the same machine as the
// bench's own stamp before the append).
//
//	go test ./server -run x -bench DashboardEventLag -benchtime 200x
func BenchmarkDashboardEventLag(b *testing.B) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		b.Skip("no chromium on PATH (.ci/run installs it: apt-get install chromium)")
	}
	e := newEnv(b, server.Config{})
	ctx := context.Background()
	tenant, err := e.db.ForTenant("acme")
	if err != nil {
		b.Fatal(err)
	}
	const id = "ui-lag"
	if _, err := tenant.SubmitRun(ctx, db.SubmitParams{RunID: id, AgentName: "nobody-serves-this", Input: "x"}); err != nil {
		b.Fatal(err)
	}
	store := e.db.Engine(engine.Key{})
	claim, err := store.StartRun(ctx, id, nil)
	if err != nil {
		b.Fatal(err)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.UserDataDir(b.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	page, cancelPage := context.WithTimeout(browser, 5*time.Minute)
	defer cancelPage()

	if err := chromedp.Do(page,
		chromedp.Navigate(e.url+"/ui/login"),
		chromedp.SendKeys(chromedp.ID("key"), e.acme),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("runs")),
		chromedp.Navigate(e.url+"/ui/runs/"+id),
		chromedp.WaitVisible(chromedp.ID("content")),
	); err != nil {
		b.Fatal(err)
	}
	html, err := chromedp.Run(page, chromedp.Evaluate[int](`document.documentElement.outerHTML.length`))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := chromedp.Run(page, chromedp.Evaluate[bool](`(() => {
			window.__seen = {};
			const c = document.getElementById("content");
			new MutationObserver(() => {
				const t = c.textContent, j = t.lastIndexOf("[");
				const k = t.slice(j + 1, t.indexOf("]", j));
				if (!(k in window.__seen)) window.__seen[k] = Date.now();
			}).observe(c, {childList: true, characterData: true, subtree: true});
			return true;
		})()`)); err != nil {
		b.Fatal(err)
	}
	weight := int64(html)
	for _, asset := range []string{"/ui/static/app.css", "/ui/static/app.js"} {
		res, err := http.Get(e.url + asset)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		weight += n
	}

	const warmup = 10 // the first deltas wait for the page's stream to settle
	lags := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := range b.N + warmup {
		sent := float64(time.Now().UnixMicro()) / 1000
		if err := store.AppendContent(ctx, claim.Fence, claim.EventSeq+1+int64(i), fmt.Sprintf(" [%d]", i)); err != nil {
			b.Fatal(err)
		}
		seen, err := chromedp.Run(page, chromedp.Poll[float64](`window.__seen[`+strconv.Quote(strconv.Itoa(i))+`]`,
			chromedp.WithPollingInterval(time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
		if err != nil {
			b.Fatalf("delta %d never shown: %v", i, err)
		}
		if i >= warmup {
			lags = append(lags, max(seen-sent, 0))
		}
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(lags[len(lags)/2], "p50-ms")
	b.ReportMetric(lags[(len(lags)*99)/100], "p99-ms")
	b.ReportMetric(float64(weight)/1024, "page-KiB")
}
