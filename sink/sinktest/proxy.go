package sinktest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy on loopback in front of a real backend, which a test
// can take down, stall, or (for HTTP backends) have answer a status in the
// backend's place. It stands for the network between a sink and its backend.
type Proxy struct {
	ln     net.Listener
	target string // where connections are forwarded

	mu      sync.Mutex
	mode    mode
	flowing chan struct{} // closed while data may flow
	conns   map[net.Conn]struct{}

	status atomic.Int32 // the status to answer, HTTP only
	left   atomic.Int32 // how many more requests get it
}

type mode uint8

const (
	up    mode = iota // forward everything
	down              // reset every connection, close new ones at once
	stall             // accept and connect, but let no byte through
)

// NewProxy starts a proxy to backend (host:port); it stops with the test.
// With http, requests pass through an HTTP layer that Answer can override.
func NewProxy(t testing.TB, backend string, http bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: backend, flowing: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.flowing)
	if http {
		p.target = p.startAnswerer(t, backend)
	}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Down()
	})
	return p
}

// Addr is the host:port a sink should dial instead of the backend's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Down cuts the backend off: open connections are reset and new ones are
// closed as soon as they are accepted, until Up.
func (p *Proxy) Down() { p.set(down) }

// Stall makes the backend stop answering: connections stay open, but no
// byte passes either way until Up.
func (p *Proxy) Stall() { p.set(stall) }

// Up restores the connection to the backend.
func (p *Proxy) Up() { p.set(up) }

// Answer makes the next n HTTP requests get status (with Retry-After: 1)
// from the proxy instead of the backend. HTTP proxies only.
func (p *Proxy) Answer(status, n int) {
	p.status.Store(int32(status))
	p.left.Store(int32(n))
}

func (p *Proxy) set(m mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == m {
		return
	}
	wasStalled := p.mode == stall
	p.mode = m
	switch m {
	case down:
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	case stall:
		p.flowing = make(chan struct{})
	}
	if wasStalled {
		close(p.flowing)
	}
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.mode == down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	b, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if _, open := p.conns[c]; !open {
		p.mu.Unlock()
		_ = b.Close()
		return
	}
	p.conns[b] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.copy(b, c); done <- struct{}{} }()
	go func() { p.copy(c, b); done <- struct{}{} }()
	<-done
	p.drop(c)
	p.drop(b)
}

// copy moves bytes from src to dst, holding each read back while stalled.
func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.flowing
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// startAnswerer starts the HTTP layer between the proxy and backend and
// returns its address.
func (p *Proxy) startAnswerer(t testing.TB, backend string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		if !errors.Is(err, io.EOF) {
			w.WriteHeader(http.StatusBadGateway)
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.left.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(p.status.Load()))
			_, _ = io.WriteString(w, `{"error":"injected `+strconv.Itoa(int(p.status.Load()))+`"}`)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
