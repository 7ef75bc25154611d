package ingest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// guard bounds every wait in these tests, so a broken server fails them
// instead of hanging them. It is never what a test asserts.
const guard = 20 * time.Second

// testListener is the listener config of these tests: read limits short
// enough to watch them act, a cap far above the connections they open.
func testListener() ListenerConfig {
	return ListenerConfig{
		ReadHeaderTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: guard,
		IdleTimeout: guard, MaxHeaderBytes: 64 << 10, MaxConnections: 1024,
	}
}

// connEvents receives the remote address of every connection the server
// has read a request on (active) and of every one it closed: the first
// 4096 of each, which is more than any test that reads them opens.
type connEvents struct{ active, closed chan string }

// note sends addr on ch unless ch is full: a fixture that serves more
// requests than anyone reads must not stall its server.
func note(ch chan string, addr string) {
	select {
	case ch <- addr:
	default:
	}
}

// serveOn serves h on a loopback port through Listen with lc and returns its
// address and the server's connection events.
func serveOn(t *testing.T, h http.Handler, lc ListenerConfig) (string, *connEvents) {
	t.Helper()
	hs, ln, err := Listen("127.0.0.1:0", h, lc)
	if err != nil {
		t.Fatal(err)
	}
	ev := &connEvents{active: make(chan string, 4096), closed: make(chan string, 4096)}
	hs.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateActive:
			note(ev.active, c.RemoteAddr().String())
		case http.StateClosed, http.StateHijacked:
			note(ev.closed, c.RemoteAddr().String())
		}
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String(), ev
}

// listenEdge serves the real edge, producing to the fixture's in-process
// broker, through Listen with lc; the fixture's url points at it.
func listenEdge(t *testing.T, lc ListenerConfig) (*fixture, string, *connEvents) {
	t.Helper()
	f := newFixture(t, 5*time.Second)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sources, err := NewSources(testSources, Deps{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	edge := New(sources, Output{Producer: NewKafkaProducer(f.client), Encoder: f.serde, ChangesTopic: testTopic, EventsTopic: testEventsTopic},
		WithLogger(log), WithProduceTimeout(5*time.Second))
	addr, ev := serveOn(t, edge.Handler(), lc)
	f.url = "http://" + addr
	return f, addr, ev
}

// await receives n values from ch, failing t if they do not come within guard.
func await(t *testing.T, ch <-chan string, n int, what string) []string {
	t.Helper()
	got := make([]string, 0, n)
	timeout := time.After(guard)
	for len(got) < n {
		select {
		case v := <-ch:
			got = append(got, v)
		case <-timeout:
			t.Fatalf("%s: only %d of %d", what, len(got), n)
		}
	}
	return got
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// trickle writes p to c one byte every interval until it is all written, a
// write fails or stop is closed.
func trickle(c net.Conn, p []byte, interval time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for _, b := range p {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if _, err := c.Write([]byte{b}); err != nil {
			return
		}
	}
}

// trickleRequest writes head and the first byte of body on c, then, from
// goroutines of its own, trickles the rest of body one byte every interval
// while it reads the answer, and stops the trickle once it has it. answer
// gets the answer's status, or 0 and the error when none could be read.
func trickleRequest(t *testing.T, c net.Conn, head string, body []byte, interval time.Duration, answer func(status int, err error)) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "%s%c", head, body[0]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	go trickle(c, body[1:], interval, stop)
	go func() {
		defer close(stop)
		_ = c.SetReadDeadline(time.Now().Add(guard))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answer(0, err)
			return
		}
		_ = resp.Body.Close()
		answer(resp.StatusCode, nil)
	}()
}

// signedHead is the request line and headers of a signed LiSA notification
// of body, without the header block's final CRLF.
func signedHead(body []byte) string {
	return "POST /webhooks/lisa-main HTTP/1.1\r\nHost: edge\r\nAuthorization: ApiKey k1\r\n" +
		"X-Hmac-Signature: " + sign("s1", body) + "\r\nContent-Type: application/json\r\n"
}

// Three hundred connections trickling signed bodies a byte at a time do not
// delay a valid request, and the read timeout then cuts them off unaccepted.
func TestListenerSlowBodiesDoNotDelayAValidRequest(t *testing.T) {
	const slow = 300
	lc := testListener()
	f, addr, ev := listenEdge(t, lc)

	// A body takes 200ms a byte, over 7s: far past lc.ReadTimeout, so a
	// server that waited for it would accept it.
	type answer struct {
		status int
		err    error
	}
	answers := make(chan answer, slow)
	slowAddrs := map[string]bool{}
	for i := range slow {
		body := []byte(fmt.Sprintf(`{"productId":"slow-%03d","price":1}`, i))
		c := dial(t, addr)
		slowAddrs[c.LocalAddr().String()] = true
		head := signedHead(body) + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
		trickleRequest(t, c, head, body, 200*time.Millisecond, func(status int, err error) {
			answers <- answer{status: status, err: err}
		})
	}
	// The server has read the headers of every slow request: each is in
	// the handler, reading its body.
	await(t, ev.active, slow, "slow requests read")

	valid := []byte(`{"productId":"valid","price":2}`)
	if status, resp, _ := f.postSigned("/webhooks/lisa-main", valid, "s1", "k1"); status != http.StatusAccepted {
		t.Fatalf("valid request: %d %v", status, resp)
	}
	if n := len(ev.closed); n != 0 {
		t.Fatalf("%d connections closed before the valid request was answered; want every slow one still open", n)
	}

	closed := await(t, ev.closed, slow, "slow connections closed by the server")
	for _, a := range closed {
		if !slowAddrs[a] {
			t.Fatalf("server closed %s, which is not a slow connection", a)
		}
	}
	for range slow {
		if a := <-answers; a.err == nil && a.status < 400 {
			t.Fatalf("a slow body was answered %d; want it refused or the connection closed", a.status)
		}
	}
	recs := f.records()
	if len(recs) != 1 || string(recs[0].Key) != "shop-eu:valid" {
		t.Fatalf("want only the valid request's record, got %d records", len(recs))
	}
}

// Past MaxConnections, further connections wait unserved until one closes,
// and are served then.
func TestListenerCapsConnections(t *testing.T) {
	const limit, clients = 2, 12
	lc := testListener()
	lc.MaxConnections = limit
	var inside, most atomic.Int32
	entered := make(chan string, clients)
	release := make(chan struct{})
	addr, _ := serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inside.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		entered <- r.RemoteAddr
		<-release
		inside.Add(-1)
		_, _ = io.WriteString(w, "served")
	}), lc)

	answers := make(chan error, clients)
	for range clients {
		c := dial(t, addr)
		// Written in full even while the server does not accept c: the
		// kernel buffers it.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(guard))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || string(b) != "served" {
					err = fmt.Errorf("got %d %q", resp.StatusCode, b)
				}
			}
			answers <- err
		}()
	}
	// Every request is sent. Let them through one at a time: each one
	// answered closes its connection and frees a place for the next.
	await(t, entered, limit, "requests in the handler")
	for range clients - limit {
		release <- struct{}{}
		await(t, entered, 1, "request let in after one finished")
	}
	for range limit {
		release <- struct{}{}
	}
	for range clients {
		if err := <-answers; err != nil {
			t.Fatalf("a waiting connection was not served: %v", err)
		}
	}
	if m := most.Load(); m != limit {
		t.Fatalf("%d requests were in the handler at once; want the cap, %d", m, limit)
	}
}

// A request whose body came chunked is answered with Connection: close and
// the connection closed, so a request pipelined behind it, which a proxy
// framing by Content-Length took for body, is never served (RFC 9112 §6.1).
func TestListenerClosesAfterChunkedBody(t *testing.T) {
	body := []byte(`{"productId":"chunked","price":3}`)
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	smuggled := "GET /openapi.json HTTP/1.1\r\nHost: edge\r\n\r\n"
	cases := []struct {
		name   string
		framed string // headers after signedHead, then the body
		want   []int  // statuses answered on the connection
	}{
		{"content-length and chunked",
			fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(chunked)+len(smuggled), chunked),
			[]int{http.StatusAccepted}},
		{"chunked and content-length",
			fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s", len(body), chunked),
			[]int{http.StatusAccepted}},
		{"chunked only", "Transfer-Encoding: chunked\r\n\r\n" + chunked, []int{http.StatusAccepted}},
		// The control: with plain framing the pipelined request is served.
		{"content-length only", fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body),
			[]int{http.StatusAccepted, http.StatusOK}},
	}
	_, addr, _ := listenEdge(t, testListener())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := io.WriteString(c, signedHead(body)+tc.framed+smuggled); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(guard))
			br := bufio.NewReader(c)
			var got []int
			var closing []bool
			for len(got) < 2 {
				if _, err := br.Peek(1); errors.Is(err, io.EOF) {
					break // closed by the server
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("after %v: %v; want the server to answer or close", got, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				got = append(got, resp.StatusCode)
				closing = append(closing, resp.Close)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("answered %v, want %v", got, tc.want)
			}
			if wantClose := len(tc.want) == 1; closing[0] != wantClose {
				t.Fatalf("first response has Connection: close %v, want %v", closing[0], wantClose)
			}
		})
	}
}

// Headers sent too slowly are cut off by ReadHeaderTimeout before any
// handler runs, even though the whole-request ReadTimeout is far off.
func TestListenerCutsOffSlowHeaders(t *testing.T) {
	lc := testListener()
	lc.ReadHeaderTimeout, lc.ReadTimeout = 500*time.Millisecond, 2*guard
	var called atomic.Bool
	addr, ev := serveOn(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }), lc)

	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	// 60 bytes at 100ms: the headers would be complete after 6s.
	stop := make(chan struct{})
	defer close(stop)
	go trickle(c, []byte("Host: edge\r\nConnection: close\r\nX-Filler: "+strings.Repeat("a", 15)+"\r\n\r\n"), 100*time.Millisecond, stop)

	// Cut off after a header line, the connection is closed unanswered;
	// inside one, net/http reads the partial line as a malformed header
	// and answers a plain 400 first.
	_ = c.SetReadDeadline(time.Now().Add(guard))
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server kept the connection open; want it closed at the header timeout")
	}
	if called.Load() || len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400 ") {
		t.Fatalf("handler called %v, answered %q; want the connection closed before the handler, at most with a 400", called.Load(), got)
	}
	await(t, ev.closed, 1, "connection closed by the server")
}

// A keep-alive connection that sends no next request is closed after
// IdleTimeout.
func TestListenerClosesIdleConnections(t *testing.T) {
	lc := testListener()
	lc.IdleTimeout, lc.ReadHeaderTimeout, lc.ReadTimeout = 300*time.Millisecond, 2*guard, 2*guard
	addr, _ := serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), lc)

	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(guard))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("want a kept-alive 200, got %v %v", resp, err)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %d bytes, %v; want it closed by the server", n, err)
	}
}

// Refusals net/http makes before any handler runs are plain text, not
// JSON. README lists them; this pins down that list.
func TestListenerPreHandlerRefusalsAreThoseDocumented(t *testing.T) {
	cases := []struct {
		name, request string
		status        int
	}{
		{"headers over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: edge\r\nX-Big: " + strings.Repeat("a", 128<<10) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"control byte in a header value", "GET / HTTP/1.1\r\nHost: edge\r\nX-Bad: a\x01b\r\n\r\n", http.StatusBadRequest},
		{"space in a header name", "GET / HTTP/1.1\r\nHost: edge\r\nX Bad: a\r\n\r\n", http.StatusBadRequest},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"two different Content-Lengths", "POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", http.StatusBadRequest},
		{"transfer coding other than chunked", "POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: gzip\r\n\r\n", http.StatusNotImplemented},
		{"HTTP/2 without upgrade", "GET / HTTP/2.0\r\nHost: edge\r\n\r\n", http.StatusHTTPVersionNotSupported},
		{"an Expect other than 100-continue", "POST / HTTP/1.1\r\nHost: edge\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\na", http.StatusExpectationFailed},
	}
	var called atomic.Bool
	addr, _ := serveOn(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }), testListener())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(guard))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status || !resp.Close || strings.Contains(resp.Header.Get("Content-Type"), "json") {
				t.Fatalf("got %d (close %v, %q), want a plain %d that closes the connection", resp.StatusCode, resp.Close, resp.Header.Get("Content-Type"), tc.status)
			}
			if called.Load() {
				t.Fatal("the handler ran")
			}
		})
	}
}

// Listen refuses a setting net/http would read as "no limit".
func TestListenRefusesUnboundedSettings(t *testing.T) {
	fields := map[string]func(*ListenerConfig){
		"ReadHeaderTimeout": func(lc *ListenerConfig) { lc.ReadHeaderTimeout = 0 },
		"ReadTimeout":       func(lc *ListenerConfig) { lc.ReadTimeout = -time.Second },
		"WriteTimeout":      func(lc *ListenerConfig) { lc.WriteTimeout = 0 },
		"IdleTimeout":       func(lc *ListenerConfig) { lc.IdleTimeout = 0 },
		"MaxHeaderBytes":    func(lc *ListenerConfig) { lc.MaxHeaderBytes = 0 },
		"MaxConnections":    func(lc *ListenerConfig) { lc.MaxConnections = 0 },
	}
	for field, unset := range fields {
		t.Run(field, func(t *testing.T) {
			lc := testListener()
			unset(&lc)
			_, _, err := Listen("127.0.0.1:0", http.NotFoundHandler(), lc)
			if !errors.Is(err, ErrListenerConfig) || !strings.Contains(err.Error(), field+" ") {
				t.Fatalf("got %v, want ErrListenerConfig naming %s", err, field)
			}
		})
	}
}
