package ingest

import (
	"net/http"
	"time"

	"github.com/productstream/productstream/outbound"
)

// ErrRefusedAddress surfaces (wrapped in *url.Error and *net.OpError) from
// requests of the client NewOutboundClient builds when the destination
// resolves to an address it never connects to: loopback, private, link-local
// (cloud metadata), unspecified, multicast or otherwise not publicly
// routable. It is outbound.ErrRefusedAddress.
var ErrRefusedAddress = outbound.ErrRefusedAddress

// outboundTimeout bounds every outbound request: dial, TLS, headers and body.
// SNS gives up on a delivery after 15 s, so a fetch must end well before.
const outboundTimeout = 5 * time.Second

// NewOutboundClient returns the hardened client for the few outbound
// requests a signature scheme needs (SNS certificates and subscription
// confirmations): outbound.NewClient with a 5 s overall timeout, so no
// redirects (a 3xx is returned as the response, never followed), no proxy
// from the environment, TLS 1.2 or later with the system roots, and a
// dialer that refuses, at connect time and so after DNS resolution, every
// address that is not public. It is safe for concurrent use.
func NewOutboundClient() *http.Client {
	return outbound.NewClient(outbound.WithTimeout(outboundTimeout))
}

// refuseRedirects makes a client return a 3xx response as it is.
func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
