package ingest

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
// requests of the client NewOutboundClient builds when the destination
// resolves to an address it never connects to: loopback, private, link-local
// (cloud metadata), unspecified, multicast or otherwise not publicly
// routable.
var ErrRefusedAddress = errors.New("outbound connection to a non-public address refused")

// outboundTimeout bounds every outbound request: dial, TLS, headers and body.
// SNS gives up on a delivery after 15 s, so a fetch must end well before.
const outboundTimeout = 5 * time.Second

// NewOutboundClient returns the hardened client for the few outbound
// requests a signature scheme needs (SNS certificates and subscription
// confirmations): a 5 s overall timeout, no redirects (a 3xx is returned
// as the response, never followed), no proxy from the environment, TLS 1.2
// or later with the system roots, and a dialer that refuses, at connect
// time and so after DNS resolution, every address that is not public (see
// checkOutboundAddr). It is safe for concurrent use.
func NewOutboundClient() *http.Client {
	dialer := newGuardedDialer()
	return &http.Client{
		Timeout:       outboundTimeout,
		CheckRedirect: refuseRedirects,
		Transport: &http.Transport{
			// Proxy stays nil: a proxy would make the dialer see the proxy's
			// address instead of the destination's.
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    outboundTimeout,
			ResponseHeaderTimeout:  outboundTimeout,
			MaxResponseHeaderBytes: 16 << 10,
			MaxIdleConns:           8,
			IdleConnTimeout:        90 * time.Second,
			ForceAttemptHTTP2:      true,
		},
	}
}

// refuseRedirects makes a client return a 3xx response as it is.
func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newGuardedDialer returns a dialer whose Control hook refuses non-public
// addresses before the socket connects.
func newGuardedDialer() *net.Dialer {
	return &net.Dialer{
		Timeout:   outboundTimeout,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			return checkOutboundAddr(network, address)
		},
	}
}

// Prefixes refused besides what netip classifies: "this network", shared
// address space (CGNAT), IETF protocol assignments, documentation and
// benchmarking ranges, reserved and broadcast, deprecated site-local and
// IPv4-compatible IPv6.
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
// (2002::/16, the IPv4 in bytes 2-5).
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// checkOutboundAddr is the dialer's Control: address is the "ip:port" about
// to be connected. It returns an error wrapping ErrRefusedAddress unless the
// network is TCP and the address is public unicast.
func checkOutboundAddr(network, address string) error {
	if !strings.HasPrefix(network, "tcp") {
		return fmt.Errorf("%w: network %s", ErrRefusedAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrRefusedAddress, address)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrRefusedAddress, ap.Addr())
	}
	return nil
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
