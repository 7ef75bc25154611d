package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// redisProxy is a TCP proxy on loopback in front of a real Redis that reads
// the RESP protocol as it forwards it, so that a test can hold back the
// reply to one chosen command: the command reaches Redis and is executed,
// but the client never hears so. Both directions are forwarded byte for
// byte, whole messages (what arrived together leaves together); each reply
// is paired with the command it answers (Redis answers a connection's
// commands in order; RESP3 pushes answer none).
//
// sinktest.Proxy can cut or stall a connection, but not let a command
// through while holding its reply, which is what this one is for.
type redisProxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every connection's two pumps

	mu    sync.Mutex
	conns map[*proxyConn]struct{}
	// pick, while armed, chooses the reply to hold; held receives it.
	pick func(cmd []string, reply respValue) bool
	held chan heldReply
	// holding: a reply is held, and no reply passes any more, on any
	// connection (open or opened later), until reset.
	holding bool
	closing bool // the test is over: connections are closed as they come
}

// heldReply is the command whose reply the proxy holds, and that reply.
type heldReply struct {
	cmd   []string
	reply respValue
}

// proxyConn is one client connection and the proxy's connection to Redis
// for it.
type proxyConn struct {
	client, server net.Conn
	closeOnce      sync.Once
	closed         chan struct{} // closed once both are closed
	pumps          sync.WaitGroup

	mu   sync.Mutex
	sent [][]string // commands forwarded and not answered yet, oldest first
}

// startRedisProxy starts a proxy to the Redis at target (host:port); it
// stops with the test, closing every connection and waiting for its
// goroutines.
func startRedisProxy(t testing.TB, target string) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redis proxy: listen: %v", err)
	}
	p := &redisProxy{t: t, ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		p.reset()
		p.wg.Wait()
	})
	return p
}

// addr is the host:port a client dials instead of Redis's.
func (p *redisProxy) addr() string { return p.ln.Addr().String() }

// arm makes the proxy hold the first reply, on any connection, for which
// pick (called with the command and its reply, one reply at a time) returns
// true: that reply is not forwarded, and from then on no reply is, on any
// connection, until reset. The channel returned receives the held reply.
// Replies that pick passes over are forwarded as usual.
func (p *redisProxy) arm(pick func(cmd []string, reply respValue) bool) <-chan heldReply {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pick, p.held = pick, make(chan heldReply, 1)
	return p.held
}

// reset closes every open connection (call it once their client is gone)
// and waits for their goroutines, then disarms the proxy and lets replies
// pass again for the connections that follow.
func (p *redisProxy) reset() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
		c.pumps.Wait()
	}
	p.mu.Lock()
	p.pick, p.held, p.holding = nil, nil, false
	p.mu.Unlock()
}

func (p *redisProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server, closed: make(chan struct{})}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			c.close()
			continue
		}
		// The pumps count with the connection, before reset can see it,
		// and with the proxy: reset waits for the one, the test's end for
		// the other.
		c.pumps.Add(2)
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() {
			defer c.pumps.Done()
			defer p.drop(c)
			p.pumpCommands(c)
		})
		p.wg.Go(func() {
			defer c.pumps.Done()
			defer p.drop(c)
			p.pumpReplies(c)
		})
	}
}

// drop closes c and forgets it.
func (p *redisProxy) drop(c *proxyConn) {
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
		close(c.closed)
	})
}

// pumpCommands forwards the client's commands to Redis, noting each one
// before it goes, until either side closes.
func (p *redisProxy) pumpCommands(c *proxyConn) {
	r, w := bufio.NewReaderSize(c.client, 64<<10), bufio.NewWriterSize(c.server, 64<<10)
	for {
		raw, v, err := readRESP(r)
		if err != nil {
			p.report("command", err)
			return
		}
		cmd := make([]string, len(v.elems))
		for i, e := range v.elems {
			cmd[i] = e.str
		}
		c.mu.Lock()
		c.sent = append(c.sent, cmd)
		c.mu.Unlock()
		if _, err := w.Write(raw); err != nil {
			return
		}
		// What the client sent in one go leaves in one go.
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// pumpReplies forwards Redis's replies to the client, each paired with its
// command, until either side closes or a reply is held; then it waits for
// the connection to close.
func (p *redisProxy) pumpReplies(c *proxyConn) {
	r, w := bufio.NewReaderSize(c.server, 64<<10), bufio.NewWriterSize(c.client, 64<<10)
	for {
		raw, v, err := readRESP(r)
		if err != nil {
			p.report("reply", err)
			return
		}
		var cmd []string
		if v.kind != '>' { // a push answers no command
			c.mu.Lock()
			if len(c.sent) > 0 {
				cmd, c.sent = c.sent[0], c.sent[1:]
			}
			c.mu.Unlock()
		}
		p.mu.Lock()
		hold := p.holding
		if !hold && p.pick != nil && cmd != nil && p.pick(cmd, v) {
			hold, p.holding, p.pick = true, true, nil
			p.held <- heldReply{cmd: cmd, reply: v}
		}
		p.mu.Unlock()
		if hold {
			// The replies before this one go; this one and the rest stay.
			_ = w.Flush()
			<-c.closed
			return
		}
		if _, err := w.Write(raw); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// report fails the test on a message the proxy could not read; a closed
// connection is the normal end of one.
func (p *redisProxy) report(what string, err error) {
	var perr *respError
	if errors.As(err, &perr) {
		p.t.Errorf("redis proxy: reading a %s: %v", what, err)
	}
}

// respValue is one RESP2 or RESP3 message.
type respValue struct {
	kind  byte        // its type: '+', '-', ':', '$', '*', '%', '>', ...
	null  bool        // a null ($-1, *-1, _)
	str   string      // a simple or bulk string or error; an integer's, double's ... text
	elems []respValue // an array's, set's or push's elements; a map's keys and values in turn
}

// respError is a message that is not RESP.
type respError struct{ msg string }

func (e *respError) Error() string { return "not RESP: " + e.msg }

// maxRESPLen bounds a bulk string or aggregate the proxy reads.
const maxRESPLen = 64 << 20

// readRESP reads one message from r and returns its bytes as read and its
// value. An attribute (|) is returned with the message it precedes.
func readRESP(r *bufio.Reader) ([]byte, respValue, error) {
	var raw []byte
	v, err := readRESPValue(r, &raw)
	return raw, v, err
}

func readRESPValue(r *bufio.Reader, raw *[]byte) (respValue, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return respValue{}, &respError{"a line longer than the buffer"}
		}
		return respValue{}, err
	}
	*raw = append(*raw, line...)
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return respValue{}, &respError{fmt.Sprintf("line %q", line)}
	}
	v := respValue{kind: line[0]}
	text := string(line[1 : len(line)-2])
	length := func() (int, error) {
		n, err := strconv.Atoi(text)
		if err != nil || n > maxRESPLen {
			return 0, &respError{fmt.Sprintf("length %q", text)}
		}
		return n, nil
	}
	switch v.kind {
	case '+', '-', ':', ',', '#', '(':
		v.str = text
	case '_':
		v.null = true
	case '$', '!', '=': // bulk string, bulk error, verbatim string
		n, err := length()
		if err != nil {
			return v, err
		}
		if n < 0 {
			v.null = true
			break
		}
		start := len(*raw)
		*raw = append(*raw, make([]byte, n+2)...)
		if _, err := io.ReadFull(r, (*raw)[start:]); err != nil {
			return v, err
		}
		if string((*raw)[start+n:]) != "\r\n" {
			return v, &respError{"a bulk string not ended by CRLF"}
		}
		v.str = string((*raw)[start : start+n])
	case '*', '~', '>', '%', '|': // array, set, push, map, attribute
		n, err := length()
		if err != nil {
			return v, err
		}
		if n < 0 {
			v.null = true
			break
		}
		if v.kind == '%' || v.kind == '|' {
			n *= 2
		}
		v.elems = make([]respValue, 0, min(n, 1024))
		for range n {
			e, err := readRESPValue(r, raw)
			if err != nil {
				return v, err
			}
			v.elems = append(v.elems, e)
		}
		if v.kind == '|' {
			// Attributes annotate the message that follows them.
			return readRESPValue(r, raw)
		}
	default:
		return v, &respError{fmt.Sprintf("type %q", v.kind)}
	}
	return v, nil
}
