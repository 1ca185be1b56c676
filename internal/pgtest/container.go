package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// containerImage matches the Postgres major version CI and the initdb path
// use, so behaviour does not depend on which path a machine takes.
const containerImage = "postgres:15-alpine"

// dockerPingTimeout bounds engine detection: testcontainers' own detection
// can take many seconds (or panic) when no engine is there.
const dockerPingTimeout = 1500 * time.Millisecond

// dockerEngine reports, quickly, whether a Docker engine answers; nil means
// it is worth handing over to testcontainers.
func dockerEngine(ctx context.Context) error {
	if v := os.Getenv("KERN_TEST_NO_DOCKER"); v != "" && v != "0" && !strings.EqualFold(v, "false") {
		return errors.New("skipped because KERN_TEST_NO_DOCKER is set")
	}
	ctx, cancel := context.WithTimeout(ctx, dockerPingTimeout)
	defer cancel()

	hosts := dockerHosts()
	var errs []error
	for _, host := range hosts {
		err := pingDocker(ctx, host)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return errors.New("no DOCKER_HOST and no Docker socket found")
	}
	return errors.Join(errs...)
}

// dockerHosts lists where an engine may listen, roughly in the order
// testcontainers itself looks, so that a hit here is one it will find too.
func dockerHosts() []string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return []string{h}
	}
	var hosts []string
	if h := testcontainersHost(); h != "" {
		hosts = append(hosts, h)
	}
	socks := []string{"/var/run/docker.sock"}
	if home, err := os.UserHomeDir(); err == nil {
		socks = append(socks,
			filepath.Join(home, ".docker", "run", "docker.sock"),
			filepath.Join(home, ".docker", "desktop", "docker.sock"),
		)
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		socks = append(socks, filepath.Join(dir, "docker.sock"))
	}
	for _, s := range socks {
		// A missing socket is the common case; skip it without a ping so the
		// error lists only what actually exists.
		if _, err := os.Stat(s); err == nil {
			hosts = append(hosts, "unix://"+s)
		}
	}
	return hosts
}

// testcontainersHost reads docker.host / tc.host from
// ~/.testcontainers.properties, where Testcontainers Desktop points it.
func testcontainersHost() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	f, err := os.Open(filepath.Join(home, ".testcontainers.properties"))
	if err != nil {
		return ""
	}
	defer f.Close()
	var host string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "tc.host":
			return strings.TrimSpace(v)
		case "docker.host":
			host = strings.TrimSpace(v)
		}
	}
	return host
}

// pingDocker answers whether the engine at host responds to /_ping.
func pingDocker(ctx context.Context, host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("parse docker host %q: %w", host, err)
	}
	var dial func(ctx context.Context) (net.Conn, error)
	var d net.Dialer
	switch u.Scheme {
	case "unix":
		dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", u.Path) }
	case "tcp":
		if os.Getenv("DOCKER_TLS_VERIFY") != "" {
			// Speaking TLS here would duplicate the engine client; an open
			// port on an explicitly configured host is evidence enough.
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return fmt.Errorf("%s: %w", host, err)
			}
			return c.Close()
		}
		dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", u.Host) }
	default:
		// npipe://, ssh:// and friends: the user configured them on purpose,
		// so let testcontainers try.
		return nil
	}

	client := &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: ping answered %s", host, resp.Status)
	}
	return nil
}

// startContainer runs Postgres in a container. Ryuk removes it if this
// process dies before Stop.
func startContainer(ctx context.Context) (s *Server, err error) {
	logs := &bufLogger{}
	defer func() {
		// testcontainers panics on some misconfigured hosts; a panic here
		// would kill every test in the package instead of falling back.
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked: %v", r)
		}
		if err != nil && logs.String() != "" {
			err = fmt.Errorf("%w\ntestcontainers log:\n%s", err, logs.String())
		}
	}()

	ctr, err := tcpostgres.Run(ctx, containerImage,
		testcontainers.WithLogger(logs),
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		testcontainers.WithCmd("postgres",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=500",
			"-c", "shared_buffers=128MB",
		),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	adminURL, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = ctr.Terminate(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("connection string: %w", err)
	}
	s = &Server{
		AdminURL: adminURL,
		Kind:     KindTestcontainers,
		stop: func(ctx context.Context) error {
			if err := ctr.Terminate(ctx); err != nil {
				return fmt.Errorf("terminate container: %w", err)
			}
			return nil
		},
	}
	if err := s.probe(ctx); err != nil {
		_ = s.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// bufLogger keeps testcontainers quiet on success but lets a failure show
// what it was doing.
type bufLogger struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *bufLogger) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return
	}
	l.b.WriteString(strings.TrimRight(fmt.Sprintf(format, args...), "\n"))
	l.b.WriteByte('\n')
}

func (l *bufLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
