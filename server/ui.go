package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/kern-go/kern/db"
)

// The dashboard (/ui/): server-rendered pages over the same tenant views
// as the API, readable without JavaScript and live with it (ui/static/app.js
// follows a run over the API's event stream and refreshes the run list).
//
// Sign-in is with an API key. The session cookie holds the key's secret —
// HttpOnly, SameSite=Strict, Secure over TLS or with Config.BehindTLS —
// and every request authenticates it as the API does, so a revoked key
// ends its sessions at once and the server keeps no session state. Forms carry a CSRF token
// derived from the secret (an HMAC), checked on every POST, besides the
// SameSite cookie; the login form's token is a random cookie of its own
// (double submit).

//go:embed ui/templates/*.html
var uiTemplates embed.FS

//go:embed ui/static
var uiStatic embed.FS

const (
	sessionCookie = "kern_session"
	loginCookie   = "kern_login"
	sessionTTL    = 12 * time.Hour
)

// uiPage is a signed-in page handler.
type uiPage func(w http.ResponseWriter, r *http.Request, v *uiVisit)

// uiVisit is one signed-in request: the tenant's view, and the token its
// forms must carry.
type uiVisit struct {
	t       *db.TenantDB
	csrf    string
	riverUI bool // the tenant may open River UI
}

// page is the data every page's layout reads, and title.
func (v *uiVisit) page(title string) map[string]any {
	return map[string]any{"Title": title, "CSRF": v.csrf, "RiverUI": v.riverUI}
}

func (s *Server) uiRoutes() {
	static, _ := fs.Sub(uiStatic, "ui/static")
	s.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticFiles(http.FileServerFS(static))))
	// The site's root is the dashboard: a browser pointed at the server
	// finds it rather than a 404.
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	s.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/runs", http.StatusSeeOther)
	})
	s.mux.HandleFunc("GET /ui/login", s.uiLoginForm)
	s.mux.HandleFunc("POST /ui/login", s.uiLogin)
	s.mux.HandleFunc("POST /ui/logout", s.uiLogout)
	s.mux.Handle("GET /ui/runs", s.uiAuth(s.uiRuns))
	s.mux.Handle("GET /ui/runs/{run_id}", s.uiAuth(s.uiRun))
	s.mux.Handle("GET /ui/runs/{run_id}/events", s.uiAuth(func(w http.ResponseWriter, r *http.Request, v *uiVisit) {
		s.streamEvents(w, r, v.t)
	}))
	s.mux.Handle("POST /ui/runs/{run_id}/cancel", s.uiForm(s.uiCancel))
	s.mux.Handle("POST /ui/runs/{run_id}/tool-calls/{call_id}/{answer}", s.uiForm(s.uiAnswer))
	s.mux.Handle("GET /ui/schedules", s.uiAuth(s.uiSchedules))
}

// staticFiles lets browsers keep the assets a while: they change only
// with the binary.
func staticFiles(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// uiHeaders are set on every page: no framing, no inline script, no
// third-party anything.
func uiHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// uiAuth authenticates the session cookie; without a valid one, a page
// redirects to the sign-in form (an event stream answers 401).
func (s *Server) uiAuth(h uiPage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.visit(w, r)
		if !ok {
			return
		}
		uiHeaders(w)
		h(w, r, v)
	})
}

// uiForm is uiAuth for a POST, which must carry the session's CSRF token.
func (s *Server) uiForm(h uiPage) http.Handler {
	return s.uiAuth(func(w http.ResponseWriter, r *http.Request, v *uiVisit) {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(v.csrf)) {
			s.uiError(w, r, http.StatusForbidden, "This form has expired or came from another site. Go back, reload the page and try again.")
			return
		}
		h(w, r, v)
	})
}

func (s *Server) visit(w http.ResponseWriter, r *http.Request) (*uiVisit, bool) {
	c, err := r.Cookie(sessionCookie)
	if err == nil {
		tenant, ok, err := s.d.AuthenticateAPIKey(r.Context(), c.Value)
		if err != nil {
			s.writeError(w, r, err)
			return nil, false
		}
		if ok {
			t, err := s.d.ForTenant(tenant)
			if err != nil {
				s.writeError(w, r, err)
				return nil, false
			}
			return &uiVisit{t: t, csrf: csrfToken(c.Value), riverUI: s.mayOpenRiverUI(tenant)}, true
		}
	}
	if r.Method == http.MethodGet && r.Header.Get("Accept") != "text/event-stream" {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	} else {
		writeProblem(w, http.StatusUnauthorized, problemUnauthorized, "Unauthorized", "sign in at /ui/login")
	}
	return nil, false
}

// csrfToken is the forms' token of a session: an HMAC of a fixed text
// under the secret, so it needs no storage and reveals nothing of it.
func csrfToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("kern dashboard forms"))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// setCookie sets one of the dashboard's cookies: Secure over TLS, or
// always with Config.BehindTLS (the request reached kern as plain HTTP from
// a TLS-terminating proxy, but the browser is on https).
func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil || s.cfg.BehindTLS, SameSite: http.SameSiteStrictMode,
	})
}

func (s *Server) uiLoginForm(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, problem string) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	token := hex.EncodeToString(raw[:])
	s.setCookie(w, r, loginCookie, token, 10*time.Minute)
	uiHeaders(w)
	s.render(w, r, status, "login.html", map[string]any{"Title": "Sign in", "CSRF": token, "Error": problem, "Login": true})
}

func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	c, err := r.Cookie(loginCookie)
	if err != nil || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(c.Value)) {
		s.renderLogin(w, r, http.StatusForbidden, "The sign-in form expired. Try again.")
		return
	}
	key := r.PostFormValue("key")
	_, ok, err := s.d.AuthenticateAPIKey(r.Context(), key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		s.log.InfoContext(r.Context(), "kern: dashboard sign-in refused", logAttrs(r)...)
		s.renderLogin(w, r, http.StatusUnauthorized, "That API key is not valid (unknown or revoked).")
		return
	}
	s.setCookie(w, r, loginCookie, "", -time.Second)
	s.setCookie(w, r, sessionCookie, key, sessionTTL)
	http.Redirect(w, r, "/ui/runs", http.StatusSeeOther)
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(csrfToken(c.Value))) {
			s.uiError(w, r, http.StatusForbidden, "This form has expired. Reload the page and try again.")
			return
		}
	}
	s.setCookie(w, r, sessionCookie, "", -time.Second)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, data map[string]any) {
	t := s.pages[page]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", data); err != nil {
		s.log.ErrorContext(r.Context(), "kern: render page", append(logAttrs(r), "error", err)...)
	}
}

func (s *Server) uiError(w http.ResponseWriter, r *http.Request, status int, message string) {
	uiHeaders(w)
	s.render(w, r, status, "error.html", map[string]any{"Title": http.StatusText(status), "Message": message})
}

// parsePages parses each page with the layout, once per Server.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(uiTemplates, "ui/templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := make(map[string]*template.Template)
	for _, name := range names {
		if name == "ui/templates/layout.html" {
			continue
		}
		t, err := template.New("").Funcs(uiFuncs).ParseFS(uiTemplates, "ui/templates/layout.html", name)
		if err != nil {
			return nil, err
		}
		pages[name[len("ui/templates/"):]] = t
	}
	return pages, nil
}
