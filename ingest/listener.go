package ingest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"golang.org/x/net/netutil"
)

// ListenerConfig bounds what clients can hold on the public webhook
// listener. Every field is required and must be positive: net/http reads a
// zero timeout as "no limit", which is what a slow client exploits. The
// defaults live in config.HTTP (the comments name its keys); the ingest role
// passes them here.
type ListenerConfig struct {
	// ReadHeaderTimeout bounds reading a request's line and headers, from
	// its first byte (http.read_header_timeout). A client still sending
	// headers then is disconnected: unanswered, or with net/http's
	// plain-text 400 when the cut falls inside a header line.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body, from its
	// first byte (http.read_timeout). A body still arriving then fails to
	// read, so it is refused and the connection closed.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request's headers to
	// the end of the response, so it must cover reading the body and
	// waiting for Kafka (the ingest role uses kafka.produce_timeout + 30s).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request
	// for this long (http.idle_timeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the request line and headers; net/http refuses
	// more with a plain-text 431.
	MaxHeaderBytes int
	// MaxConnections caps the connections open at once, idle keep-alive
	// ones included (http.max_connections). Past it, new connections are
	// not accepted: they wait in the kernel's accept queue, unread, until
	// one closes. The timeouts above bound how long any one connection
	// holds its place.
	MaxConnections int
}

// ErrListenerConfig surfaces from Listen when a ListenerConfig field is not
// positive.
var ErrListenerConfig = errors.New("invalid listener config")

// Listen binds addr and returns the server for the public webhook listener
// and the listener to Serve it on, which accepts at most
// lc.MaxConnections connections at once. Closing the server (Close or
// Shutdown) closes the listener.
//
// The server closes the connection after every request whose body was sent
// chunked, by answering it with Connection: close. RFC 9112 §6.1 requires
// that for a request with both Content-Length and Transfer-Encoding, which a
// proxy in front may have framed by its Content-Length: net/http reads such
// a body as chunked and drops the Content-Length header before h sees the
// request, so h cannot tell the two apart, and would otherwise serve the
// bytes that follow as the next request (request smuggling). A sender that
// sends chunked bodies loses keep-alive, nothing else.
func Listen(addr string, h http.Handler, lc ListenerConfig) (*http.Server, net.Listener, error) {
	if err := lc.validate(); err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	hs := &http.Server{
		Handler:           closeAfterChunked(h),
		ReadHeaderTimeout: lc.ReadHeaderTimeout,
		ReadTimeout:       lc.ReadTimeout,
		WriteTimeout:      lc.WriteTimeout,
		IdleTimeout:       lc.IdleTimeout,
		MaxHeaderBytes:    lc.MaxHeaderBytes,
	}
	return hs, netutil.LimitListener(ln, lc.MaxConnections), nil
}

func (lc ListenerConfig) validate() error {
	var errs []error
	for _, f := range []struct {
		name     string
		v        any
		positive bool
	}{
		{"ReadHeaderTimeout", lc.ReadHeaderTimeout, lc.ReadHeaderTimeout > 0},
		{"ReadTimeout", lc.ReadTimeout, lc.ReadTimeout > 0},
		{"WriteTimeout", lc.WriteTimeout, lc.WriteTimeout > 0},
		{"IdleTimeout", lc.IdleTimeout, lc.IdleTimeout > 0},
		{"MaxHeaderBytes", lc.MaxHeaderBytes, lc.MaxHeaderBytes > 0},
		{"MaxConnections", lc.MaxConnections, lc.MaxConnections > 0},
	} {
		if !f.positive {
			errs = append(errs, fmt.Errorf("%w: %s must be positive, got %v", ErrListenerConfig, f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// closeAfterChunked sets Connection: close on the response to every request
// whose body was sent chunked, so net/http closes the connection after it
// (see Listen).
func closeAfterChunked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(r.TransferEncoding, "chunked") {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
