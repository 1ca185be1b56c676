package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kern-go/kern/server"
)

// riverUI sends method path to River UI with the acme session and the
// given headers (Origin, Referer).
func riverUI(t *testing.T, e *env, method, path, body string, headers map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.AddCookie(&http.Cookie{Name: "kern_session", Value: e.acme})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// jobState is the state River UI shows for the job of id.
func jobState(t *testing.T, e *env, id string) string {
	t.Helper()
	var job struct{ State string }
	riverUI(t, e, "GET", "/riverui/api/jobs/"+id, "", nil).expect(t, http.StatusOK).json(t, &job)
	return job.State
}

// River UI's API changes jobs on the session cookie alone: a request from
// another site (or one that does not say where it comes from) is refused
// and changes nothing; one from the server's own pages goes through.
func TestRiverUIRefusesCrossSiteChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{RiverUITenants: []string{"acme"}})
	e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "later", "delay": "1h"}).expect(t, http.StatusAccepted)
	var list struct {
		Data []struct {
			ID    json.Number `json:"id"`
			State string      `json:"state"`
		} `json:"data"`
	}
	riverUI(t, e, "GET", "/riverui/api/jobs?state=scheduled", "", nil).expect(t, http.StatusOK).json(t, &list)
	if len(list.Data) != 1 {
		t.Fatalf("scheduled jobs: %+v", list.Data)
	}
	id := list.Data[0].ID.String()
	cancel := fmt.Sprintf(`{"ids":[%q]}`, id)
	self, _ := url.Parse(e.url)
	for name, h := range map[string]map[string]string{
		"no Origin nor Referer":       nil,
		"foreign Origin":              {"Origin": "https://evil.example"},
		"null Origin":                 {"Origin": "null"},
		"foreign Referer":             {"Referer": "https://evil.example/page"},
		"foreign Origin, own Referer": {"Origin": "http://evil.example", "Referer": e.url + "/riverui/"},
		"own host on another port":    {"Origin": "http://" + self.Hostname() + ":1"},
	} {
		r := riverUI(t, e, "POST", "/riverui/api/jobs/cancel", cancel, h)
		if p := r.expectProblem(t, http.StatusForbidden); p["type"] != "urn:kern:problem:forbidden" {
			t.Errorf("%s: problem %v", name, p)
		}
		if st := jobState(t, e, id); st != "scheduled" {
			t.Fatalf("%s: the job is %s after a refused cancel", name, st)
		}
	}
	riverUI(t, e, "POST", "/riverui/api/jobs/cancel", cancel, map[string]string{"Referer": e.url + "/riverui/jobs"}).expect(t, http.StatusOK)
	if st := jobState(t, e, id); st != "cancelled" {
		t.Fatalf("the job is %s after a same-origin cancel, want cancelled", st)
	}
	riverUI(t, e, "POST", "/riverui/api/jobs/delete", cancel, map[string]string{"Origin": e.url}).expect(t, http.StatusOK)
	riverUI(t, e, "GET", "/riverui/api/jobs/"+id, "", nil).expect(t, http.StatusNotFound)
}

// Behind a TLS-terminating proxy the requests are plain HTTP: with
// Config.BehindTLS the dashboard's cookies are Secure all the same, and
// River UI takes changes from https pages only.
func TestBehindTLSMakesCookiesSecure(t *testing.T) {
	t.Parallel()
	for _, behind := range []bool{false, true} {
		e := newEnv(t, server.Config{BehindTLS: behind, RiverUITenants: []string{"acme"}})
		res, err := http.Get(e.url + "/ui/login")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		var login *http.Cookie
		for _, c := range res.Cookies() {
			if c.Name == "kern_login" {
				login = c
			}
		}
		if login == nil || login.Secure != behind || !login.HttpOnly {
			t.Errorf("BehindTLS %v: login cookie %+v, want Secure %v", behind, login, behind)
		}
		form := url.Values{"csrf": {login.Value}, "key": {e.acme}}
		req, _ := http.NewRequest("POST", e.url+"/ui/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(login)
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		var session *http.Cookie
		for _, c := range res.Cookies() {
			if c.Name == "kern_session" && c.Value != "" {
				session = c
			}
		}
		if res.StatusCode != http.StatusSeeOther || session == nil || session.Secure != behind {
			t.Errorf("BehindTLS %v: sign-in %d, session cookie %+v, want Secure %v", behind, res.StatusCode, session, behind)
		}
		host := strings.TrimPrefix(e.url, "http://")
		want := http.StatusForbidden // an http page, when the browser is on https
		if !behind {
			want = http.StatusBadRequest // through to River UI, which finds no ids
		}
		if r := riverUI(t, e, "POST", "/riverui/api/jobs/cancel", `{"ids":[]}`, map[string]string{"Origin": "http://" + host}); r.status != want {
			t.Errorf("BehindTLS %v: cancel from http://%s: %d, want %d: %s", behind, host, r.status, want, r.body)
		}
		if r := riverUI(t, e, "POST", "/riverui/api/jobs/cancel", `{"ids":[]}`, map[string]string{"Origin": "https://" + host}); r.status != http.StatusBadRequest {
			t.Errorf("BehindTLS %v: cancel from https://%s: %d, want 400 from River UI: %s", behind, host, r.status, r.body)
		}
	}
}
