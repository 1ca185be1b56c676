// Package pgproxy is a TCP proxy in front of Postgres for tests that need a
// connection to fail at a chosen moment — in particular after the server
// has committed a statement but before the client has read the reply, the
// one failure that leaves a client not knowing whether its write happened.
//
// It reads the wire protocol just far enough to find message boundaries and
// statement texts. Clients must connect without TLS (sslmode=disable) and
// send the statement text with every execution
// (default_query_exec_mode=exec), so the proxy can recognise it.
package pgproxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
)

// Proxy forwards connections from Addr to a Postgres server.
type Proxy struct {
	ln              net.Listener
	network, target string

	mu    sync.Mutex
	match string        // arms a cut: a statement whose text contains it
	cut   chan struct{} // closed once the armed cut happened
	hold  chan struct{} // armed by HoldNext: closed once a connection is held
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on a loopback port and forwards to Postgres at address on
// network ("tcp" and "host:port", or "unix" and a socket path).
func Start(network, address string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, network: network, target: address, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutAfterCommit arms the proxy: the next statement whose text contains
// match runs to completion on the server — committed, when it runs outside
// an explicit transaction — but its reply never reaches the client; the
// connection is closed instead. The returned channel is closed once that
// has happened.
func (p *Proxy) CutAfterCommit(match string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match, p.cut = match, make(chan struct{})
	return p.cut
}

// HoldNext arms the proxy: the next connection it accepts is held — never
// forwarded to Postgres, never answered — until its client gives up on it
// (or the proxy closes), as a connection a loaded machine or a lost packet
// holds up would be. The returned channel is closed once a connection is
// held.
func (p *Proxy) HoldNext() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = make(chan struct{})
	return p.hold
}

// Close stops listening and closes every proxied connection.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		hold := p.hold
		p.hold = nil
		if hold != nil {
			p.conns[client] = struct{}{}
		}
		p.mu.Unlock()
		if hold != nil {
			p.wg.Add(1)
			go p.held(client, hold)
			continue
		}
		server, err := net.Dial(p.network, p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		c := &conn{proxy: p, client: client, server: server}
		p.wg.Add(2)
		go c.fromClient()
		go c.fromServer()
	}
}

// held reads what a held connection's client sends, and drops it, until
// the client (or Close) ends the connection.
func (p *Proxy) held(client net.Conn, hold chan struct{}) {
	defer p.wg.Done()
	close(hold)
	_, _ = io.Copy(io.Discard, client)
	_ = client.Close()
	p.mu.Lock()
	delete(p.conns, client)
	p.mu.Unlock()
}

// conn is one proxied connection.
type conn struct {
	proxy          *Proxy
	client, server net.Conn

	mu sync.Mutex
	// cutting: the armed statement went to the server; its reply is held
	// back (cut) until the server says it is done, then the connection dies.
	cutting chan struct{}
}

func (c *conn) close() {
	_ = c.client.Close()
	_ = c.server.Close()
	c.proxy.mu.Lock()
	delete(c.proxy.conns, c.client)
	delete(c.proxy.conns, c.server)
	c.proxy.mu.Unlock()
}

// fromClient forwards the client's messages, watching statement texts.
func (c *conn) fromClient() {
	defer c.proxy.wg.Done()
	defer c.close()
	// The startup message has no type byte: a length, then the rest.
	startup, err := readUntyped(c.client)
	if err != nil || writeAll(c.server, startup) != nil {
		return
	}
	for {
		msg, err := readTyped(c.client)
		if err != nil {
			return
		}
		if text, ok := statementText(msg); ok {
			c.armIfMatches(text)
		}
		if writeAll(c.server, msg) != nil {
			return
		}
	}
}

func (c *conn) armIfMatches(text string) {
	p := c.proxy
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.match == "" || !strings.Contains(text, p.match) {
		return
	}
	c.mu.Lock()
	c.cutting = p.cut
	c.mu.Unlock()
	p.match, p.cut = "", nil
}

// fromServer forwards the server's messages, holding back the reply to an
// armed statement: after its CommandComplete, the ReadyForQuery that
// follows means the server has finished (and committed) it, and the
// connection is closed instead of answered.
func (c *conn) fromServer() {
	defer c.proxy.wg.Done()
	defer c.close()
	var held [][]byte
	completed := false
	for {
		msg, err := readTyped(c.server)
		if err != nil {
			return
		}
		c.mu.Lock()
		cutting := c.cutting
		c.mu.Unlock()
		if cutting == nil {
			if writeAll(c.client, msg) != nil {
				return
			}
			continue
		}
		held = append(held, msg)
		switch msg[0] {
		case 'C':
			completed = true
		case 'Z':
			if completed {
				close(cutting)
				return // the deferred close cuts both sides
			}
			// A ReadyForQuery without a CommandComplete ends a prepare:
			// the statement itself has not run yet.
			for _, m := range held {
				if writeAll(c.client, m) != nil {
					return
				}
			}
			held = held[:0]
		}
	}
}

// statementText returns the SQL of a Query ('Q') or Parse ('P') message.
func statementText(msg []byte) (string, bool) {
	body := msg[5:]
	switch msg[0] {
	case 'Q':
		return cString(body), true
	case 'P':
		name := cString(body)
		if len(body) <= len(name) {
			return "", false
		}
		return cString(body[len(name)+1:]), true
	}
	return "", false
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// readTyped reads one message: a type byte, a length counting itself, the body.
func readTyped(r io.Reader) ([]byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n < 4 || n > 1<<30 {
		return nil, errors.New("pgproxy: bad message length")
	}
	msg := make([]byte, 1+n)
	copy(msg, head[:])
	_, err := io.ReadFull(r, msg[5:])
	return msg, err
}

// readUntyped reads the startup message: a length counting itself, the body.
func readUntyped(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n < 4 || n > 1<<20 {
		return nil, errors.New("pgproxy: bad startup length")
	}
	msg := make([]byte, n)
	copy(msg, head[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

func writeAll(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}
