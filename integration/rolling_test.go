package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Regression (issue "Production", item 4): a rolling restart loses
// nothing and fails no request. Two ingest replicas sit behind a load
// balancer that routes only to replicas whose /readyz says ready and tries
// the other replica on a connection error; a sender posts signed LiSA and
// Standard Webhooks deliveries, each for a product of its own, all along,
// while ingest A, then B, then the processor are stopped with SIGTERM and
// started again. Each ingest replica, once signalled, says "draining" on
// /readyz at once, still serves a request sent to it straight, finishes a
// request in flight when it stops accepting, then refuses connections and
// exits 0 within http.drain_delay plus http.shutdown_timeout. The sender
// sees no failure but 503s with Retry-After, and every delivery accepted
// is on changes, its product's state on products.
func TestBackendRollingRestartLosesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		start := time.Now()
		prefix := uniquePrefix(t)
		names := topics.For(prefix)
		const drain, shutdownTimeout = 2 * time.Second, 15 * time.Second
		config := roleConfigs(t, b, prefix, replicaSources+fmt.Sprintf(`processor:
  quiet_period: 200ms
  max_delay: 2s
  group: %q
`, prefix+"processor"))
		fleet := newFleet(t)
		var replicas []*replica
		for _, name := range []string{"A", "B"} {
			rep := &replica{name: name, addr: freeAddr(t), ops: freeAddr(t)}
			rep.cfg = config("ingest-"+name, fmt.Sprintf("http:\n  listen: %q\n  drain_delay: %s\n  shutdown_timeout: %s\nops:\n  listen: %q\n",
				rep.addr, drain, shutdownTimeout, rep.ops))
			rep.proc = fleet.start(t, "ingest "+name, "ingest", rep.cfg)
			replicas = append(replicas, rep)
		}
		processOps := freeAddr(t)
		processCfg := config("process", fmt.Sprintf("ops:\n  listen: %q\n", processOps))
		process := fleet.start(t, "process", "process", processCfg)
		lb := newBalancer(t, replicas)
		for _, rep := range replicas {
			lb.waitReady(t, rep, 60*time.Second)
		}
		waitFor(t, "the processor ready", 60*time.Second, func() (bool, string) { return readyz(processOps) })
		t.Logf("%s: 2 ingest replicas and the processor ready after %v", b.name, since(start))

		s := newRollingSender(lb.url)
		s.start(2, 50*time.Millisecond)
		defer s.stop()
		time.Sleep(time.Second)

		// The rolling restart, and what each step took.
		var report []string
		for _, rep := range replicas {
			before := s.counts()
			took := restartReplica(t, fleet, lb, rep, s, drain, shutdownTimeout)
			during := s.counts()
			if during.accepted <= before.accepted {
				t.Errorf("ingest %s: no delivery was accepted through the balancer during its restart", rep.name)
			}
			report = append(report, fmt.Sprintf("ingest %s exited %v after SIGTERM (drain %v, bound %v), %d deliveries accepted meanwhile",
				rep.name, took.Round(time.Millisecond), drain, drain+shutdownTimeout, during.accepted-before.accepted))
			time.Sleep(500 * time.Millisecond)
		}
		const processBound = time.Minute // as the manifests' grace period assumes
		took := process.term(t, processBound)
		fleet.start(t, "process", "process", processCfg)
		waitFor(t, "the restarted processor ready", 60*time.Second, func() (bool, string) { return readyz(processOps) })
		report = append(report, fmt.Sprintf("process exited %v after SIGTERM (bound %v)", took.Round(time.Millisecond), processBound))
		time.Sleep(time.Second)
		s.stop()

		c := s.counts()
		lb.mu.Lock()
		t.Logf("%s: %d requests sent, %d accepted (%d straight to a draining replica), %d answered 503 with Retry-After, %d failed; "+
			"the balancer retried %d connection errors on the other replica (%v); answers per replica %v",
			b.name, c.sent, c.accepted, c.direct, c.unavailable, len(c.failures), len(lb.retried), lb.retriedKinds(), lb.answered)
		lb.mu.Unlock()
		for _, line := range report {
			t.Logf("%s: %s", b.name, line)
		}
		if len(c.failures) > 0 {
			t.Errorf("%d requests failed otherwise than 503 with Retry-After, the first ones: %v", len(c.failures), c.failures[:min(10, len(c.failures))])
		}
		if c.accepted < 50 {
			t.Fatalf("only %d deliveries accepted: the sender did not keep sending", c.accepted)
		}

		// Nothing accepted is lost: every delivery's change on changes and
		// its product's state, with the delivery's title, on products.
		serde := newSerde(t, b.registry)
		want := s.acceptedKeys()
		waitFor(t, "every accepted delivery on changes and products", 90*time.Second, func() (bool, string) {
			changed := map[string]bool{}
			for _, r := range readAll(t, b.brokers, names.Changes) {
				changed[string(r.Key)] = true
			}
			states := latest(readAll(t, b.brokers, names.Products))
			var missing []string
			for key, title := range want {
				r := states[key]
				switch {
				case !changed[key]:
					missing = append(missing, key+" (no change)")
				case r == nil || r.Value == nil:
					missing = append(missing, key+" (no state)")
				default:
					st, err := serde.DecodeState(context.Background(), r.Value)
					if err != nil {
						t.Fatalf("products %s at %d/%d: %v", key, r.Partition, r.Offset, err)
					}
					if got := st.Fields.Title; got == nil || *got != title {
						missing = append(missing, fmt.Sprintf("%s (title %q, want %q)", key, *cmp.Or(got, new(string)), title))
					}
				}
			}
			slices.Sort(missing)
			return len(missing) == 0, fmt.Sprintf("%d of %d accepted deliveries missing, such as %v", len(missing), len(want), missing[:min(5, len(missing))])
		})
		t.Logf("%s: all %d accepted deliveries on changes and products after %v", b.name, len(want), since(start))
	})
}

// restartReplica stops rep with SIGTERM, checks its drain and shutdown,
// starts it again and waits until the balancer routes to it; it returns
// how long the replica took to exit.
func restartReplica(t *testing.T, fleet *fleet, lb *balancer, rep *replica, s *rollingSender, drain, shutdownTimeout time.Duration) time.Duration {
	t.Helper()
	signalled := time.Now()
	rep.proc.signal(t)

	// /readyz turns to "draining" at once, well within the drain.
	waitFor(t, "ingest "+rep.name+" /readyz draining", drain, func() (bool, string) {
		ok, saw := readyz(rep.ops)
		return !ok && strings.Contains(saw, "draining"), saw
	})
	// A request in flight when the listener closes is finished: its
	// headers and half its body are sent during the drain, the rest once
	// new connections are refused.
	slowID, path, h, body := s.delivery()
	finish := startSlowPost(t, rep.addr, path, h, body)
	// A request sent straight to it during the drain is served as before.
	direct := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	id, path, h, body := s.delivery()
	status, err := postWith(direct, "http://"+rep.addr+path, h, body)
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("ingest %s during its drain (%v after SIGTERM): %d %v, want 202", rep.name, since(signalled), status, err)
	}
	s.accept(id, true)
	waitFor(t, "ingest "+rep.name+" refusing connections", drain+shutdownTimeout, func() (bool, string) {
		err := dialOnce(rep.addr)
		return errors.Is(err, syscall.ECONNREFUSED), fmt.Sprint(err)
	})
	if refused := time.Since(signalled); refused < drain {
		t.Errorf("ingest %s stopped accepting %v after SIGTERM, before its drain (%v) ended", rep.name, refused, drain)
	}
	if status, err := finish(); err != nil || status != http.StatusAccepted {
		t.Fatalf("ingest %s: the request in flight when it stopped accepting: %d %v, want 202", rep.name, status, err)
	}
	s.accept(slowID, true)

	took := rep.proc.wait(t, drain+shutdownTimeout)
	if took < drain {
		t.Errorf("ingest %s exited %v after SIGTERM, before its drain (%v) ended", rep.name, took, drain)
	}
	if err := dialOnce(rep.addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("ingest %s after exit: dial %v, want connection refused", rep.name, err)
	}
	rep.proc = fleet.start(t, "ingest "+rep.name, "ingest", rep.cfg)
	lb.waitReady(t, rep, 60*time.Second)
	return took
}

// readyz reports whether the /readyz of the ops listener at addr answers
// 200, and what it said.
func readyz(addr string) (bool, string) {
	ok, saw, _ := probe(addr, 10*time.Second)
	return ok, saw
}

// probe asks the /readyz of the ops listener at addr, for at most timeout:
// whether it answered 200, what it said, and whether it answered at all
// (or refused the connection).
func probe(addr string, timeout time.Duration) (ok bool, saw string, answered bool) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return false, err.Error(), errors.Is(err, syscall.ECONNREFUSED)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body)), true
}

// dialOnce opens a TCP connection to addr and closes it at once.
func dialOnce(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		conn.Close()
	}
	return err
}

// postWith posts body with c and returns the status.
func postWith(c *http.Client, url string, h http.Header, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = h.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// startSlowPost sends to addr a POST's headers and the first half of its
// body; finish sends the rest and reads the answer.
func startSlowPost(t *testing.T, addr, path string, h http.Header, body []byte) (finish func() (int, error)) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, addr, len(body))
	if err := h.Write(&head); err != nil {
		t.Fatal(err)
	}
	head.WriteString("\r\n")
	head.Write(body[:len(body)/2])
	if _, err := conn.Write(head.Bytes()); err != nil {
		t.Fatal(err)
	}
	return func() (int, error) {
		if _, err := conn.Write(body[len(body)/2:]); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
}

// replica is one ingest process behind the balancer: its public and ops
// addresses stay the same across restarts.
type replica struct {
	name, addr, ops, cfg string
	proc                 *roleProc
	ready                atomic.Bool // as the balancer last saw its /readyz
}

// balancer is a load balancer with health checks in front of the ingest
// replicas: it polls each replica's /readyz every 100 ms (a probe that
// times out changes nothing; an answer or a refused connection does),
// sends each request to the next ready replica in turn, and on a
// connection error (refused, reset, closed) tries another ready replica.
type balancer struct {
	url      string
	replicas []*replica
	next     atomic.Uint64
	tr       *http.Transport

	mu       sync.Mutex
	answered map[string]int // replica -> requests it answered
	retried  []string       // each connection error retried elsewhere
}

func newBalancer(t *testing.T, replicas []*replica) *balancer {
	t.Helper()
	lb := &balancer{replicas: replicas, answered: map[string]int{},
		tr: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}}
	t.Cleanup(lb.tr.CloseIdleConnections)
	ctx, cancel := context.WithCancel(context.Background())
	var polling sync.WaitGroup
	t.Cleanup(func() { cancel(); polling.Wait() })
	for _, rep := range replicas {
		polling.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				if ok, _, answered := probe(rep.ops, time.Second); answered {
					rep.ready.Store(ok)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: "ingest"}) },
		Transport: lb,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "balancer: "+err.Error(), http.StatusBadGateway)
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	lb.url = srv.URL
	return lb
}

// RoundTrip sends req to the next ready replica, and on a connection error
// to another one.
func (lb *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	tried := map[*replica]bool{}
	var lastErr error
	for range lb.replicas {
		rep := lb.pick(tried)
		if rep == nil {
			break
		}
		tried[rep] = true
		out := req.Clone(req.Context())
		out.URL.Host, out.Host = rep.addr, ""
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		resp, err := lb.tr.RoundTrip(out)
		lb.mu.Lock()
		if err == nil {
			lb.answered[rep.name]++
		} else {
			lb.retried = append(lb.retried, rep.name+": "+err.Error())
		}
		lb.mu.Unlock()
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no replica is ready")
	}
	return nil, lastErr
}

// pick returns the next ready replica not tried yet, nil when none is.
func (lb *balancer) pick(tried map[*replica]bool) *replica {
	n := len(lb.replicas)
	first := int(lb.next.Add(1) % uint64(n))
	for i := range n {
		rep := lb.replicas[(first+i)%n]
		if rep.ready.Load() && !tried[rep] {
			return rep
		}
	}
	return nil
}

// waitReady waits until the balancer routes to rep and rep serves.
func (lb *balancer) waitReady(t *testing.T, rep *replica, timeout time.Duration) {
	t.Helper()
	waitFor(t, "ingest "+rep.name+" ready behind the balancer", timeout, func() (bool, string) {
		if !rep.ready.Load() {
			_, saw := readyz(rep.ops)
			return false, "/readyz " + saw
		}
		if err := dialOnce(rep.addr); err != nil {
			t.Fatalf("ingest %s: /readyz is ready but its listener is not: %v", rep.name, err)
		}
		return true, ""
	})
}

// retriedKinds counts the retried connection errors by kind. The caller
// holds mu.
func (lb *balancer) retriedKinds() map[string]int {
	out := map[string]int{}
	for _, e := range lb.retried {
		kind := "other"
		for _, k := range []string{"connection refused", "connection reset", "EOF", "broken pipe"} {
			if strings.Contains(e, k) {
				kind = k
				break
			}
		}
		out[kind]++
	}
	return out
}

// rollingSender posts signed deliveries through the balancer, each for a
// product of its own, alternating LiSA and Standard Webhooks.
type rollingSender struct {
	url    string
	client *http.Client
	seq    atomic.Int64
	quit   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	c        senderCounts
	accepted map[string]string // key -> title
	titles   map[int64]string  // delivery -> its key and title, "key title"
}

type senderCounts struct {
	sent, accepted, direct, unavailable int
	failures                            []string
}

func newRollingSender(lbURL string) *rollingSender {
	return &rollingSender{url: lbURL, quit: make(chan struct{}), accepted: map[string]string{}, titles: map[int64]string{},
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// delivery makes the next delivery: its number, route, headers and body.
func (s *rollingSender) delivery() (int64, string, http.Header, []byte) {
	n := s.seq.Add(1)
	id, title := fmt.Sprintf("roll-%06d", n), fmt.Sprintf("title %d", n)
	var path, key string
	var h http.Header
	var body []byte
	if n%2 == 0 {
		path, key = "/plugin-notifications/plugin-42/updates", "shop-eu:"+id
		body = fmt.Appendf(nil, `{"productId":%q,"title":%q,"price":%d.%02d}`, id, title, n, n%100)
		h = lisaHeaders(hmacHex("s1", body))
	} else {
		path, key = "/webhooks/sw-main", "vendor:"+id
		body = fmt.Appendf(nil, `{"id":%q,"title":%q}`, id, title)
		h = swSigned(fmt.Sprintf("msg_%d", n), body)
	}
	s.mu.Lock()
	s.titles[n] = key + " " + title
	s.mu.Unlock()
	return n, path, h, body
}

// accept notes that delivery n was accepted, direct when not through the
// balancer.
func (s *rollingSender) accept(n int64, direct bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, title, _ := strings.Cut(s.titles[n], " ")
	s.accepted[key] = title
	s.c.accepted++
	if direct {
		s.c.direct++
	}
}

// start runs workers senders, each pausing pause between requests.
func (s *rollingSender) start(workers int, pause time.Duration) {
	for range workers {
		s.wg.Go(func() {
			for {
				select {
				case <-s.quit:
					return
				case <-time.After(pause):
				}
				n, path, h, body := s.delivery()
				req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
				if err != nil {
					panic(err)
				}
				req.Header = h
				resp, err := s.client.Do(req)
				var status int
				var retryAfter string
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status, retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
				}
				s.mu.Lock()
				s.c.sent++
				s.mu.Unlock()
				switch {
				case err != nil:
					s.fail(fmt.Sprintf("delivery %d: %v", n, err))
				case status == http.StatusAccepted:
					s.accept(n, false)
				case status == http.StatusServiceUnavailable && retryAfter != "":
					s.mu.Lock()
					s.c.unavailable++
					s.mu.Unlock()
				default:
					s.fail(fmt.Sprintf("delivery %d: %d (Retry-After %q)", n, status, retryAfter))
				}
			}
		})
	}
}

func (s *rollingSender) fail(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c.failures = append(s.c.failures, time.Now().Format("15:04:05.000")+" "+what)
}

// stop stops the senders and waits for their last requests.
func (s *rollingSender) stop() {
	s.once.Do(func() { close(s.quit) })
	s.wg.Wait()
}

func (s *rollingSender) counts() senderCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	c.failures = slices.Clone(c.failures)
	return c
}

// acceptedKeys are the keys of the accepted deliveries, with their titles.
func (s *rollingSender) acceptedKeys() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.accepted))
	for k, v := range s.accepted {
		out[k] = v
	}
	return out
}

// swSigned signs body as a Standard Webhooks sender does, with id and
// sw-main's key (as swHeaders, for the sender's own goroutines).
func swSigned(id string, body []byte) http.Header {
	key, err := base64.StdEncoding.DecodeString(swKeyBase64)
	if err != nil {
		panic(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", ts)
	h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return h
}

// roleProc is one run of a role as a subprocess, for tests that stop and
// start roles themselves and time their exits.
type roleProc struct {
	name      string
	cmd       *exec.Cmd
	stderr    *lockedWriter
	done      chan struct{} // closed once it exited
	err       error         // its exit, once done is closed
	exitedAt  time.Time     // once done is closed
	signalled time.Time
}

// fleet holds a test's role processes: the test's end stops those still
// running, all at once.
type fleet struct {
	mu    sync.Mutex
	procs []*roleProc
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.procs {
			if !p.exited() {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, p := range f.procs {
			select {
			case <-p.done:
				if p.err != nil {
					t.Errorf("%s did not exit cleanly on SIGTERM: %v", p.name, p.err)
				}
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
				t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
			}
			if t.Failed() {
				t.Logf("%s stderr:\n%s", p.name, p.stderr.w)
			}
		}
	})
	return f
}

// start runs `productstream ROLE --config cfg`.
func (f *fleet) start(t *testing.T, name, role, cfg string) *roleProc {
	t.Helper()
	secureConfigFile(t, cfg)
	p := &roleProc{name: name, cmd: exec.Command(binary, role, "--config", cfg), stderr: &lockedWriter{w: &strings.Builder{}}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.exitedAt = time.Now()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

func (p *roleProc) exited() bool { return closed(p.done) }

// signal sends SIGTERM.
func (p *roleProc) signal(t *testing.T) {
	t.Helper()
	p.signalled = time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// wait waits for the exit that signal asked for, and fails the test
// unless it exits 0 within bound; it returns how long it took.
func (p *roleProc) wait(t *testing.T, bound time.Duration) time.Duration {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(bound + 5*time.Second):
		t.Fatalf("%s did not exit within %v of SIGTERM (bound %v); stderr:\n%s", p.name, since(p.signalled), bound, p.stderr.w)
	}
	took := p.exitedAt.Sub(p.signalled).Round(time.Millisecond)
	if p.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM; stderr:\n%s", p.name, p.err, p.stderr.w)
	}
	if took > bound {
		t.Errorf("%s exited %v after SIGTERM, past its bound %v", p.name, took, bound)
	}
	return took
}

// term sends SIGTERM and waits (see wait).
func (p *roleProc) term(t *testing.T, bound time.Duration) time.Duration {
	t.Helper()
	p.signal(t)
	return p.wait(t, bound)
}

// Regression (issue "Production", item 4): a sink member stopped with
// SIGTERM while it writes a batch finishes writing it, commits it and
// leaves the group: the group is Empty as soon as the process has exited,
// and a member started next delivers new records at once, without waiting
// for a session timeout, and repeats nothing the first one wrote.
func TestBackendSinkFinishesItsBatchAndLeavesOnSIGTERM(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		prefix := uniquePrefix(t)
		names := topics.For(prefix)
		group := prefix + "sink.partner"
		hook := newWebhookReceiver(t)
		// held makes the receiver hold each request until released; it
		// tells of each request held, and whether its sender gave up.
		var (
			holding  atomic.Bool
			arrived  = make(chan struct{}, 100)
			release  = make(chan struct{})
			canceled atomic.Int32
		)
		held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The body is read first: only then does the server notice a
			// sender that gives up (its request's context ends).
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if holding.Load() {
				arrived <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
					canceled.Add(1)
					return
				}
			}
			hook.serve(w, r)
		}))
		t.Cleanup(held.Close)
		cfg := filepath.Join(t.TempDir(), "sink.yaml")
		brokers := `"` + strings.Join(strings.Split(b.brokers, ","), `", "`) + `"`
		opsAddr := freeAddr(t)
		if err := os.WriteFile(cfg, fmt.Appendf(nil, `
ops:
  listen: %q
kafka:
  brokers: [%s]
  topic_prefix: %q
  partitions: 3
schema_registry:
  url: %q
sinks:
  - name: partner
    type: webhook
    batch: {max_records: 5, linger: 50ms}
    webhook: {url: %q, secrets: [%q], allow_private: true, timeout: 30s}
`, opsAddr, brokers, prefix, b.registry, held.URL+"/hook", hook.secret), 0o600); err != nil {
			t.Fatal(err)
		}
		serde := newSerde(t, b.registry)
		if err := serde.Register(context.Background(), names.ByKind()); err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(append(clientOpts(t, b.brokers), kgo.DefaultProduceTopic(names.Products))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		adm := kadm.NewClient(cl)
		version := int64(0)
		produce := func(keys ...string) {
			t.Helper()
			for _, key := range keys {
				version++
				ns, id, _ := strings.Cut(key, ":")
				title := "v" + strconv.FormatInt(version, 10)
				v, err := serde.EncodeState(&schemas.State{Namespace: ns, ProductID: id, Source: "s", Provider: "lisa",
					Version: version, UpdatedAt: time.Now(), Fields: schemas.Fields{Title: &title}})
				if err != nil {
					t.Fatal(err)
				}
				r := &kgo.Record{Key: []byte(key), Value: v, Headers: []kgo.RecordHeader{{Key: "version", Value: []byte(strconv.FormatInt(version, 10))}}}
				if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
		delivered := func() int {
			got, refused := hook.snapshot()
			if len(refused) > 0 {
				t.Fatalf("the receiver refused %v", refused)
			}
			n := 0
			for _, ds := range got {
				n += len(ds)
			}
			return n
		}
		// caughtUp reports whether the group has committed the end of
		// products.
		caughtUp := func() (bool, string) {
			ends, err := adm.ListEndOffsets(context.Background(), names.Products)
			if err != nil {
				return false, err.Error()
			}
			offsets, err := adm.FetchOffsets(context.Background(), group)
			if err != nil {
				return false, err.Error()
			}
			behind := ""
			ends.Each(func(o kadm.ListedOffset) {
				if c, ok := offsets.Lookup(names.Products, o.Partition); o.Offset > 0 && (!ok || c.At < o.Offset) {
					behind += fmt.Sprintf(" partition %d at %d of %d", o.Partition, c.At, o.Offset)
				}
			})
			return behind == "", "behind:" + behind
		}
		keys := func(from, n int) []string {
			var out []string
			for i := from; i < from+n; i++ {
				out = append(out, fmt.Sprintf("shop:p%02d", i))
			}
			return out
		}

		fleet := newFleet(t)
		first := fleet.start(t, "sink 1", "sink", cfg)
		// Ready once its topics are in place.
		waitFor(t, "the sink ready", 60*time.Second, func() (bool, string) { return readyz(opsAddr) })
		produce(keys(0, 10)...)
		waitFor(t, "the first 10 states delivered and committed", 60*time.Second, func() (bool, string) {
			if n := delivered(); n < 10 {
				return false, fmt.Sprintf("%d delivered", n)
			}
			return caughtUp()
		})

		// The batch in hand: the receiver holds its requests; SIGTERM
		// arrives while they are held.
		holding.Store(true)
		produce(keys(10, 3)...)
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the sink sent none of the new states within 30s")
		}
		first.signal(t)
		time.Sleep(time.Second) // a sink that gave up its batch on the signal would be gone by now
		holding.Store(false)
		close(release)
		took := first.wait(t, 20*time.Second)
		if n := canceled.Load(); n > 0 {
			t.Errorf("the sink abandoned %d requests of the batch in hand on SIGTERM", n)
		}
		// What it delivered is committed, and nothing else.
		got, _ := hook.snapshot()
		offsets, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			t.Fatal(err)
		}
		inHand := 0
		for _, r := range readAll(t, b.brokers, names.Products) {
			c, ok := offsets.Lookup(names.Products, r.Partition)
			committed := ok && r.Offset < c.At
			wrote := len(got[string(r.Key)]) > 0
			if committed != wrote {
				t.Errorf("after SIGTERM, %s at %d/%d: delivered %v, committed %v (committed offset %d)", r.Key, r.Partition, r.Offset, wrote, committed, c.At)
			}
			if wrote && slices.Contains(keys(10, 3), string(r.Key)) {
				inHand++
			}
		}
		if inHand == 0 {
			t.Errorf("the sink delivered none of the batch it held at SIGTERM")
		}
		described, err := adm.DescribeGroups(context.Background(), group)
		if err != nil {
			t.Fatal(err)
		}
		if g := described[group]; g.Err != nil || g.State != "Empty" || len(g.Members) != 0 {
			t.Errorf("group %s right after the exit: state %q, %d members (%v), want Empty: the member did not leave", group, g.State, len(g.Members), g.Err)
		}

		// The next member takes over at once and repeats nothing.
		startedAt := time.Now()
		second := fleet.start(t, "sink 2", "sink", cfg)
		produce(keys(13, 3)...)
		// (A member that had not left would hold the group's rebalance up
		// for its session timeout, 45s.)
		waitFor(t, "the second member delivering every state", 30*time.Second, func() (bool, string) {
			n := delivered()
			return n >= 16, fmt.Sprintf("%d of 16 delivered", n)
		})
		waitFor(t, "the second member committed", 30*time.Second, caughtUp)
		got, _ = hook.snapshot()
		for key, ds := range got {
			if len(ds) != 1 {
				t.Errorf("%s delivered %d times (%v), want once: a batch written was not committed", key, len(ds), ds)
			}
		}
		t.Logf("%s: the first member exited %v after SIGTERM with %d states of its batch in hand delivered and committed; the second delivered the rest %v after it started",
			b.name, took, inHand, since(startedAt))
		second.term(t, 20*time.Second)
	})
}
