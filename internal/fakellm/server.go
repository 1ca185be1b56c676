package fakellm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxBodyBytes bounds request bodies; real prompts in tests are tiny.
const maxBodyBytes = 32 << 20

// Server is a fake OpenAI chat completions and Responses API endpoint. It implements
// http.Handler, so it can be mounted anywhere; Start is a convenience that
// serves it on a loopback port. The zero value is not usable: call New.
type Server struct {
	mu      sync.Mutex
	script  func(Request) Reply
	ring    []*Request // request log, see log.go
	start   int        // index of the oldest entry once the ring is full
	limit   int
	count   int
	changed chan struct{}
	conns   atomic.Int64 // see ConnState
}

// New returns a server whose default script answers every request with
// DefaultReply(req).
func New() *Server {
	return &Server{script: DefaultReply, limit: DefaultLogLimit}
}

// Script replaces the responder. fn is called once per request, concurrently,
// so it must be safe for concurrent use. A nil fn restores DefaultReply.
func (s *Server) Script(fn func(req Request) Reply) {
	if fn == nil {
		fn = DefaultReply
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = fn
}

// ConnState counts new TCP connections; Start installs it, and a caller
// serving s on its own http.Server can set it as that server's ConnState.
// Tests use the count to check that clients reuse connections.
func (s *Server) ConnState(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		s.conns.Add(1)
	}
}

// Connections returns how many TCP connections have been opened to s (see
// ConnState) since it was created.
func (s *Server) Connections() int64 { return s.conns.Load() }

// ServeHTTP routes /v1/chat/completions, /v1/responses and /v1/models (each
// also without the /v1 prefix); everything else gets an OpenAI-shaped 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	switch path {
	case "/chat/completions":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "use POST for /chat/completions", "")
			return
		}
		s.serve(w, r, parseRequest, false)
	case "/responses":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "use POST for /responses", "")
			return
		}
		s.serve(w, r, parseResponsesRequest, true)
	case "/models":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "use GET for /models", "")
			return
		}
		writeModels(w)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown path %s", r.URL.Path), "")
	}
}

// serve answers one model request: parse decodes the body of its API (chat
// completions, or the Responses API when responses is set), and the reply
// the script picks for it is played in that API's wire format.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, parse func([]byte) (Request, error), responses bool) {
	received := time.Now()
	// Reading the body to EOF matters beyond parsing: net/http only starts
	// watching the connection for a client hang-up (cancelling r.Context())
	// once the body has been consumed.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, fmt.Sprintf("reading request body: %v", err), "")
		return
	}
	req, err := parse(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	req.ReceivedAt = received

	entry := s.add(req)
	s.mu.Lock()
	script := s.script
	snapshot := *entry
	s.mu.Unlock()

	x := newExchange(w, r, snapshot, func(o outcome) { s.finish(entry, o) })
	x.responses = responses
	// Deferred so that a panicking script, or the abort below, still marks
	// the request done.
	defer x.done()
	x.run(script(snapshot))
	if x.outcome.cut {
		// The deferred finish still runs. Aborting the handler makes net/http drop the connection without
		// the chunked terminator, which is what a provider crash looks like.
		panic(http.ErrAbortHandler)
	}
}

// Start serves s on 127.0.0.1 at a free port. It returns the base URL,
// ending in "/v1" as go-openai's ClientConfig.BaseURL expects, and a stop
// func that closes the listener and all connections and waits for in-flight
// handlers. Requests still in flight at stop see their client disconnect
// (Hang would otherwise block stop forever) and are logged as ClientGone.
func (s *Server) Start() (baseURL string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("fakellm: listening: %w", err)
	}
	var t handlerTracker
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !t.enter() {
				writeError(w, http.StatusServiceUnavailable, "fakellm server stopping", "")
				return
			}
			defer t.wg.Done()
			s.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         s.ConnState,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // always ErrServerClosed after stop
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			t.close()
			_ = srv.Close()
			<-served
			t.wg.Wait()
		})
	}
	return "http://" + ln.Addr().String() + "/v1", stop, nil
}

// handlerTracker is a WaitGroup that refuses new handlers once closed, so
// that Add never races with Wait during stop.
type handlerTracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (t *handlerTracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *handlerTracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}
