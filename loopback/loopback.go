// Package loopback hands out loopback addresses for the servers that tests
// and the load harness start in other processes.
//
// A port found free by listening on port 0 and closing the listener comes
// from the kernel's ephemeral range, the same range every outgoing
// connection takes its local port from. Between the pick and the child
// process's bind, a client connecting anywhere can take that port, and the
// child then fails with "address already in use". Ports uses a window below
// the ephemeral range, which only explicit binds can take.
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The window ports are picked from: below Linux's default ephemeral range
// (32768-60999) and clear of the fixed ports of the test brokers
// (18081-19094) and backends (25432, 26379, 29200, 29300).
const (
	windowLow  = 20000
	windowHigh = 25000 // exclusive
)

// ephemeralRange is where Linux keeps its ephemeral port range.
const ephemeralRange = "/proc/sys/net/ipv4/ip_local_port_range"

// Ports hands out addresses "127.0.0.1:PORT", each free when handed out and
// never the same one twice from one Ports. The zero value is ready; a Ports
// is safe for concurrent use.
type Ports struct {
	// low and high (exclusive) narrow the window, for tests; zero means
	// the default window.
	low, high int

	mu     sync.Mutex
	handed map[int]bool
}

// Addr returns a loopback address whose port was free a moment ago and
// that p has not handed out before. The port is outside the ephemeral
// range when the window is (the default on Linux); otherwise the kernel
// picks it.
func (p *Ports) Addr() (string, error) {
	low, high := windowLow, windowHigh
	if p.high > 0 {
		low, high = p.low, p.high
	}
	if !windowClear(ephemeralRange, high) {
		return p.fromKernel()
	}
	// From a random start, so that two processes picking at once rarely
	// try the same ports, through the whole window.
	n := high - low
	start := rand.IntN(n)
	for i := range n {
		port := low + (start+i)%n
		if free(port) && p.take(port) {
			return addr(port), nil
		}
	}
	return "", fmt.Errorf("no free loopback port in %d-%d", low, high-1)
}

// fromKernel asks the kernel for a free port until it answers one p has
// not handed out.
func (p *Ports) fromKernel() (string, error) {
	for range 200 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("pick a loopback port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p.take(port) {
			return addr(port), nil
		}
	}
	return "", errors.New("the kernel answered only ports handed out already")
}

// take records port as handed out and reports whether it was not before.
func (p *Ports) take(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.handed[port] {
		return false
	}
	if p.handed == nil {
		p.handed = make(map[int]bool)
	}
	p.handed[port] = true
	return true
}

// free reports whether port can be listened on on loopback now.
func free(port int) bool {
	ln, err := net.Listen("tcp", addr(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// windowClear reports whether a window ending before high lies below the
// ephemeral range that file describes ("LOW HIGH"). An unreadable file
// (not Linux) counts as not clear.
func windowClear(file string, high int) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	low, err := strconv.Atoi(f[0])
	return err == nil && low >= high
}
