// Package outbound builds the HTTP client for requests productstream sends
// to addresses it was told about from outside (SNS certificate URLs, a
// partner's webhook endpoint): a client that cannot be turned against the
// network it runs in (SSRF).
//
// Its dialer refuses, at connect time and so after DNS resolution (a name
// that resolves, or rebinds, to a private address is refused too), every
// address that is not public unicast. It follows no redirects, takes no
// proxy from the environment, and speaks TLS 1.2 or later.
package outbound

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrRefusedAddress surfaces (wrapped in *url.Error and *net.OpError) from
// requests of a client NewClient builds when the destination resolves to an
// address it never connects to: loopback, private, link-local (cloud
// metadata), unspecified, multicast or otherwise not publicly routable
// (with AllowPrivate: unspecified and multicast only), or a network other
// than TCP.
var ErrRefusedAddress = errors.New("outbound connection to a non-public address refused")

// DefaultTimeout bounds every request of a client built without
// WithTimeout.
const DefaultTimeout = 5 * time.Second

// options is NewClient's configuration, compiled from the Options.
type options struct {
	timeout      time.Duration
	allowPrivate bool
	idlePerHost  int
}

// Option configures NewClient.
type Option func(*options)

// WithTimeout bounds each request as a whole (dial, TLS handshake, waiting
// for the headers, reading the body), and each of those steps. Default 5s
// (DefaultTimeout); a d of 0 or less keeps the default.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// AllowPrivate lets the client connect to loopback, private, link-local,
// CGNAT, documentation and other non-public unicast addresses, for tests
// and local setups; the unspecified address and multicast stay refused.
// Default off: only public unicast addresses are dialed.
func AllowPrivate() Option {
	return func(o *options) { o.allowPrivate = true }
}

// WithIdleConnsPerHost is how many idle connections to one host the client
// keeps for reuse; set it to the number of requests sent at once to one
// host, so that they do not open a new connection each. Default 2 (net/http's
// DefaultMaxIdleConnsPerHost); n of 0 or less keeps the default.
func WithIdleConnsPerHost(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.idlePerHost = n
		}
	}
}

// NewClient returns the guarded client: a bounded timeout (WithTimeout), no
// redirects (a 3xx is returned as the response, never followed), no proxy
// from the environment, TLS 1.2 or later with the system roots, and a dialer
// that refuses, at connect time, every address that is not public unicast
// (see AllowPrivate) with an error wrapping ErrRefusedAddress. It is safe
// for concurrent use.
func NewClient(opts ...Option) *http.Client {
	o := options{timeout: DefaultTimeout, idlePerHost: http.DefaultMaxIdleConnsPerHost}
	for _, opt := range opts {
		opt(&o)
	}
	dialer := newGuardedDialer(o)
	return &http.Client{
		Timeout:       o.timeout,
		CheckRedirect: refuseRedirects,
		Transport: &http.Transport{
			// Proxy stays nil: a proxy would make the dialer see the proxy's
			// address instead of the destination's.
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    o.timeout,
			ResponseHeaderTimeout:  o.timeout,
			MaxResponseHeaderBytes: 16 << 10,
			MaxIdleConns:           max(8, o.idlePerHost),
			MaxIdleConnsPerHost:    o.idlePerHost,
			IdleConnTimeout:        90 * time.Second,
			ForceAttemptHTTP2:      true,
		},
	}
}

// refuseRedirects makes a client return a 3xx response as it is.
func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newGuardedDialer returns a dialer whose Control hook refuses the
// addresses o does not allow before the socket connects.
func newGuardedDialer(o options) *net.Dialer {
	return &net.Dialer{
		Timeout:   o.timeout,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			return checkAddr(network, address, o.allowPrivate)
		},
	}
}

// Prefixes refused besides what netip classifies: "this network", shared
// address space (CGNAT), IETF protocol assignments, documentation and
// benchmarking ranges, reserved and broadcast, deprecated site-local and
// IPv4-compatible IPv6. Read only.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fec0::/10"),
}

// Prefixes of IPv6 addresses that carry an IPv4 address, which is checked
// in turn: NAT64 (64:ff9b::/96, the IPv4 in the last 4 bytes) and 6to4
// (2002::/16, the IPv4 in bytes 2-5). Read only.
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// checkAddr is the dialer's Control: address is the "ip:port" about to be
// connected. It returns an error wrapping ErrRefusedAddress unless the
// network is TCP and the address is public unicast, or, with allowPrivate,
// neither unspecified nor multicast.
func checkAddr(network, address string, allowPrivate bool) error {
	if !strings.HasPrefix(network, "tcp") {
		return fmt.Errorf("%w: network %s", ErrRefusedAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrRefusedAddress, address)
	}
	allowed := publicAddr(ap.Addr())
	if allowPrivate {
		allowed = dialableAddr(ap.Addr())
	}
	if !allowed {
		return fmt.Errorf("%w: %s", ErrRefusedAddress, ap.Addr())
	}
	return nil
}

// dialableAddr reports whether a is an address AllowPrivate lets the client
// connect to: any valid one but unspecified and multicast.
func dialableAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast()
}

// publicAddr reports whether a is a publicly routable unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() ||
		a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range refusedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		return publicAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	case sixToFour.Contains(a):
		return publicAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	}
	return true
}
