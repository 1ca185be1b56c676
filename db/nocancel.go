package db

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// cancelRequestCode is the protocol's CancelRequest code: the second word
// of the 16-byte message a client sends on a new connection to have the
// server cancel a statement.
const cancelRequestCode = 80877102

// errNoCancelThroughPooler is what a held-back cancel request returns.
var errNoCancelThroughPooler = errors.New("kern: no cancel request through a connection pooler")

// cancelGuard holds back pgx's protocol-level cancel requests once the
// pool is known to go through a pooler (block). pgx sends one whenever a
// statement's context ends mid-flight (pgconn's asyncClose, before it
// closes the connection), on a connection of its own to the same
// address; PgBouncer 1.18 can crash on them (PgBouncer issue #822:
// "server in bad state" right after a cancel request). Held back, the
// statement is still cut off: pgx closes its connection, and the pooler
// closes the backend's.
type cancelGuard struct {
	block atomic.Bool
}

// wrap makes cfg's connections pass through the guard.
func (g *cancelGuard) wrap(cfg *pgconn.Config) {
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &guardedConn{Conn: c, guard: g}, nil
	}
}

// guardedConn looks at the first message a connection sends: a cancel
// request is not sent while the guard blocks.
type guardedConn struct {
	net.Conn
	guard *cancelGuard
	once  sync.Once
	held  bool
}

func (c *guardedConn) Write(b []byte) (int, error) {
	c.once.Do(func() {
		c.held = c.guard.block.Load() && len(b) == 16 &&
			binary.BigEndian.Uint32(b[0:4]) == 16 && binary.BigEndian.Uint32(b[4:8]) == cancelRequestCode
	})
	if c.held {
		return 0, errNoCancelThroughPooler
	}
	return c.Conn.Write(b)
}

// throughProxy tells whether pool's connections reach Postgres through
// something in between, a pooler most likely: Postgres says it serves them
// on another port than the one they dialed. A TCP port forward (a
// container's published port) looks the same, and only loses pgx's cancel
// requests there; a unix socket says nothing (NULL).
func throughProxy(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var port *int32
	if err := pool.QueryRow(ctx, "SELECT inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port); err != nil {
		return false, err
	}
	dialed := pool.Config().ConnConfig.Port
	return port != nil && dialed != 0 && uint16(*port) != dialed, nil
}
