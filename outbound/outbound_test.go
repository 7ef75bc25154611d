package outbound

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The address rules: public unicast only, IPv4 hidden in IPv6 included;
// with AllowPrivate, everything but unspecified and multicast.
func TestAddressRules(t *testing.T) {
	cases := []struct {
		addr    string
		public  bool
		private bool // allowed with AllowPrivate
	}{
		{"52.94.236.248:443", true, true},
		{"[2600:1f18:4000::1]:443", true, true},
		{"127.0.0.1:443", false, true},
		{"127.8.9.10:443", false, true},
		{"10.1.2.3:443", false, true},
		{"172.16.0.1:443", false, true},
		{"192.168.1.1:443", false, true},
		{"169.254.169.254:80", false, true},
		{"169.254.0.1:80", false, true},
		{"100.64.0.1:443", false, true},
		{"0.0.0.0:443", false, false},
		{"0.1.2.3:443", false, true},
		{"224.0.0.1:443", false, false},
		{"255.255.255.255:443", false, true},
		{"[::1]:443", false, true},
		{"[::]:443", false, false},
		{"[fe80::1]:443", false, true},
		{"[fe80::1%25eth0]:443", false, true},
		{"[fd00:ec2::254]:80", false, true},
		{"[fc00::1]:443", false, true},
		{"[ff02::1]:443", false, false},
		{"[::ffff:127.0.0.1]:443", false, true},
		{"[::ffff:0.0.0.0]:443", false, false},
		{"[::ffff:169.254.169.254]:80", false, true},
		{"[64:ff9b::a9fe:a9fe]:80", false, true},
		{"[64:ff9b::3424:1]:80", true, true},
		{"[2002:a9fe:a9fe::1]:80", false, true},
		{"[::127.0.0.1]:443", false, true},
		{"localhost:443", false, false},
	}
	for _, tc := range cases {
		err := checkAddr("tcp", tc.addr, false)
		if tc.public && err != nil || !tc.public && !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("%s: %v, want public=%v", tc.addr, err, tc.public)
		}
		err = checkAddr("tcp", tc.addr, true)
		if tc.private && err != nil || !tc.private && !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("%s with AllowPrivate: %v, want allowed=%v", tc.addr, err, tc.private)
		}
	}
	for _, allowPrivate := range []bool{false, true} {
		if err := checkAddr("udp", "52.94.236.248:53", allowPrivate); !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("udp (allowPrivate %v): %v, want refused", allowPrivate, err)
		}
	}
}

// countingListener listens on addr and counts the connections it accepts;
// "" when addr cannot be listened on here.
func countingListener(t *testing.T, network, addr string, accepted *atomic.Int32) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		return ""
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// The guarded dialer refuses 127.0.0.1, 10.x, 169.254.169.254 and [::1]
// before connecting: the loopback listeners never see a connection.
func TestDialerRefuses(t *testing.T) {
	var accepted atomic.Int32
	v4 := countingListener(t, "tcp4", "127.0.0.1:0", &accepted)
	v6 := countingListener(t, "tcp6", "[::1]:0", &accepted)
	if v6 == "" {
		v6 = "[::1]:443" // no IPv6 loopback here: still refused before connecting
	}
	d := newGuardedDialer(options{timeout: DefaultTimeout})
	for _, addr := range []string{v4, v6, "10.0.0.1:443", "169.254.169.254:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("dial %s: %v, want ErrRefusedAddress", addr, err)
		}
	}
	// The whole client too: a loopback HTTP server is never reached.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	resp, err := NewClient().Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrRefusedAddress) {
		t.Errorf("client GET %s: %v, want ErrRefusedAddress", srv.URL, err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load() + hits.Load(); n != 0 {
		t.Fatalf("%d connections reached loopback", n)
	}
}

// AllowPrivate reaches a loopback server, and still refuses the unspecified
// address (which would reach a local listener) before connecting.
func TestAllowPrivate(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := NewClient(AllowPrivate())
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET %s with AllowPrivate: %v", srv.URL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || hits.Load() != 1 {
		t.Fatalf("status %d, %d hits; want 204 from the server", resp.StatusCode, hits.Load())
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	resp, err = c.Get("http://0.0.0.0:" + port + "/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrRefusedAddress) {
		t.Fatalf("GET 0.0.0.0 with AllowPrivate: %v, want ErrRefusedAddress", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the unspecified address reached the server (%d hits)", hits.Load())
	}
}

// The client's settings: the timeout by default and as given, never
// redirected, no proxy from the environment, TLS 1.2 at least.
func TestClientSettings(t *testing.T) {
	cases := []struct {
		name        string
		opts        []Option
		timeout     time.Duration
		idlePerHost int
	}{
		{"defaults", nil, 5 * time.Second, http.DefaultMaxIdleConnsPerHost},
		{"timeout", []Option{WithTimeout(750 * time.Millisecond)}, 750 * time.Millisecond, http.DefaultMaxIdleConnsPerHost},
		{"zero keeps the defaults", []Option{WithTimeout(0), WithIdleConnsPerHost(0)}, 5 * time.Second, http.DefaultMaxIdleConnsPerHost},
		{"idle conns", []Option{WithIdleConnsPerHost(16)}, 5 * time.Second, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClient(tc.opts...)
			tr, ok := c.Transport.(*http.Transport)
			if !ok || tr.Proxy != nil || tr.DialContext == nil || tr.TLSClientConfig.MinVersion < 0x0303 {
				t.Fatalf("transport %+v", c.Transport)
			}
			if c.Timeout != tc.timeout || tr.ResponseHeaderTimeout != tc.timeout || tr.TLSHandshakeTimeout != tc.timeout {
				t.Fatalf("timeouts %v/%v/%v, want %v", c.Timeout, tr.ResponseHeaderTimeout, tr.TLSHandshakeTimeout, tc.timeout)
			}
			if tr.MaxIdleConnsPerHost != tc.idlePerHost || tr.MaxIdleConns < tc.idlePerHost {
				t.Fatalf("idle conns %d per host of %d, want %d", tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tc.idlePerHost)
			}
			if err := c.CheckRedirect(nil, nil); !errors.Is(err, http.ErrUseLastResponse) {
				t.Fatalf("CheckRedirect: %v", err)
			}
		})
	}
}

// A 3xx is returned as the response: its Location is never visited.
func TestRedirectNotFollowed(t *testing.T) {
	var visited atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/from", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/to", http.StatusFound) })
	mux.HandleFunc("/to", func(http.ResponseWriter, *http.Request) { visited.Add(1) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := NewClient(AllowPrivate()).Get(srv.URL + "/from")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || visited.Load() != 0 {
		t.Fatalf("status %d, target visited %d times; want the 302 itself", resp.StatusCode, visited.Load())
	}
}
