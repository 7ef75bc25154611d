package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/outbound"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/sinktest"
	"github.com/productstream/productstream/stdwebhooks"
)

// newSecret returns a fresh whsec_ secret.
func newSecret() string {
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	return stdwebhooks.SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// newVerifier builds productstream's own standardwebhooks source (ingest)
// with secrets: the receiver checks every request with it, and reads the
// body through its payload mapping as productstream would ingest it.
func newVerifier(t *testing.T, secrets ...string) ingest.Adapter {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("payload: {id_pointer: /id, type_pointer: /type, delete_types: [product.deleted]}"), &doc); err != nil {
		t.Fatal(err)
	}
	srcs, err := ingest.NewSources([]config.Source{{Name: "partner", Provider: "standardwebhooks", Namespace: "ns",
		Secrets: secrets, Options: *doc.Content[0]}}, ingest.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("building the verifier: %v", err)
	}
	return srcs[0].Adapter
}

// receiver is a partner endpoint on loopback: it checks each request's
// signature with every one of its verifiers (each holding one or more of
// the sink's secrets) and its headers, and keeps the last body per path
// (the suite's target) and key. A body whose data holds "poison": true is
// answered 400. answer, when set, may answer a checked request itself
// (returning true) before that.
type receiver struct {
	srv       *httptest.Server
	verifiers []ingest.Adapter
	secrets   int // how many v1 entries each request must carry: the groups' secrets together
	delay     time.Duration
	answer    func(w http.ResponseWriter, r *http.Request, m message) bool

	requests    atomic.Int32
	inFlight    atomic.Int32
	maxInFlight atomic.Int32

	mu       sync.Mutex
	held     map[string]map[string][]byte // path -> key -> last body
	problems []string
}

// receiverOpt changes a receiver before it starts.
type receiverOpt func(*receiver)

func answering(f func(w http.ResponseWriter, r *http.Request, m message) bool) receiverOpt {
	return func(rc *receiver) { rc.answer = f }
}

func delaying(d time.Duration) receiverOpt { return func(rc *receiver) { rc.delay = d } }

// newReceiver starts a receiver whose requests must verify with each of
// the verifier groups (each a list of secrets).
func newReceiver(t *testing.T, groups [][]string, opts ...receiverOpt) *receiver {
	t.Helper()
	rc := &receiver{held: map[string]map[string][]byte{}}
	for _, g := range groups {
		rc.verifiers = append(rc.verifiers, newVerifier(t, g...))
		rc.secrets += len(g) // the sink signs with all of them
	}
	for _, o := range opts {
		o(rc)
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		rc.srv.Close()
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, p := range rc.problems {
			t.Errorf("receiver: %s", p)
		}
	})
	return rc
}

func (rc *receiver) problem(format string, args ...any) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.problems = append(rc.problems, fmt.Sprintf(format, args...))
}

// addr is the receiver's host:port.
func (rc *receiver) addr() string { return rc.srv.Listener.Addr().String() }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	rc.requests.Add(1)
	n := rc.inFlight.Add(1)
	defer rc.inFlight.Add(-1)
	for {
		m := rc.maxInFlight.Load()
		if n <= m || rc.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.problem("reading a body: %v", err)
		return
	}
	m, ok := rc.check(r, body)
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if rc.delay > 0 {
		time.Sleep(rc.delay)
	}
	if rc.answer != nil && rc.answer(w, r, m) {
		return
	}
	var data struct {
		Poison bool `json:"poison"`
	}
	if m.Data != nil && json.Unmarshal(m.Data, &data) == nil && data.Poison {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"poisoned product refused"}`)
		return
	}
	rc.mu.Lock()
	if rc.held[r.URL.Path] == nil {
		rc.held[r.URL.Path] = map[string][]byte{}
	}
	rc.held[r.URL.Path][m.Key] = body
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// check verifies one request as a partner would, and what the sink
// promises of its headers and body, recording every problem.
func (rc *receiver) check(r *http.Request, body []byte) (message, bool) {
	req := &ingest.Request{Header: r.Header.Clone(), Body: body, Received: time.Now()}
	for i, v := range rc.verifiers {
		verified, err := v.Verify(r.Context(), req)
		if err != nil {
			rc.problem("verifier %d refused a request: %v", i, err)
			return message{}, false
		}
		if i > 0 {
			continue
		}
		ch, err := v.Normalize(r.Context(), verified)
		if err != nil || len(ch.Changes) != 1 {
			rc.problem("ingest cannot read the body %s: %v", body, err)
			return message{}, false
		}
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		rc.problem("body %s: %v", body, err)
		return message{}, false
	}
	id := r.Header.Get("webhook-id")
	sigs := strings.Fields(r.Header.Get("webhook-signature"))
	switch {
	case len(sigs) != rc.secrets:
		rc.problem("webhook-signature has %d entries, want %d", len(sigs), rc.secrets)
	case r.Method != http.MethodPost:
		rc.problem("method %s", r.Method)
	case id != escapeForTest(m.Key)+":"+strconv.FormatInt(m.Version, 10):
		rc.problem("webhook-id %q for key %q version %d", id, m.Key, m.Version)
	case r.Header.Get("Idempotency-Key") != id:
		rc.problem("Idempotency-Key %q, webhook-id %q", r.Header.Get("Idempotency-Key"), id)
	case r.Header.Get("Content-Type") != "application/json":
		rc.problem("Content-Type %q", r.Header.Get("Content-Type"))
	case r.Header.Get("User-Agent") != "productstream-webhook/1":
		rc.problem("User-Agent %q", r.Header.Get("User-Agent"))
	case m.Type != "product.updated" && m.Type != "product.deleted":
		rc.problem("type %q", m.Type)
	case m.Key != m.Namespace+":"+m.ID:
		rc.problem("key %q is not namespace %q : id %q", m.Key, m.Namespace, m.ID)
	case (m.Type == "product.deleted") != (string(m.Data) == "null" || m.Data == nil):
		rc.problem("type %s with data %s", m.Type, m.Data)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", m.Timestamp); err != nil {
		rc.problem("timestamp %q is not RFC 3339 UTC with milliseconds", m.Timestamp)
	}
	return m, true
}

// escapeForTest is the webhook-id's key, written out independently of
// webhookID: '.', '%', space and bytes outside printable ASCII
// percent-encoded.
func escapeForTest(key string) string {
	r := strings.NewReplacer("%", "%25", ".", "%2E", " ", "%20", "\n", "%0A")
	return r.Replace(key)
}

// lastBody is the last body the receiver kept for key under path.
func (rc *receiver) lastBody(path, key string) ([]byte, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b, ok := rc.held[path][key]
	return b, ok
}

// heldOf reads what the receiver holds for key in s's target, as a
// sink.Held.
func (rc *receiver) heldOf(t *testing.T, s sink.Sink, key string) (sink.Held, bool) {
	t.Helper()
	u, err := url.Parse(s.(*Sink).endpoint)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := rc.lastBody(u.Path, key)
	if !ok {
		return sink.Held{}, false
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("held body %s: %v", b, err)
	}
	h := sink.Held{Version: m.Version, Deleted: m.Type == "product.deleted"}
	if !h.Deleted {
		h.Doc = m.Data
	}
	return h, true
}

// open builds a sink posting to http://addr/path.
func open(t *testing.T, addr, path string, secrets []string, tweak ...func(*config.SinkWebhook)) *Sink {
	t.Helper()
	cfg := config.SinkWebhook{URL: "http://" + addr + "/" + path, Secrets: secrets, Timeout: 5 * time.Second,
		AllowPrivate: true, Concurrency: 4}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func write(t *testing.T, s *Sink, recs ...sink.Record) ([]sink.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.Write(ctx, recs)
}

// The conformance suite, against a partner endpoint that checks every
// signature with productstream's own verifier.
func TestConformance(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}})
	sinktest.Run(t, sinktest.Backend{
		Addr: rc.addr(),
		HTTP: true,
		Open: func(t *testing.T, addr, target string) sink.Sink {
			s, err := New(context.Background(), config.SinkWebhook{URL: "http://" + addr + "/" + target,
				Secrets: []string{secret}, Timeout: 5 * time.Second, AllowPrivate: true, Concurrency: 4},
				slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return s
		},
		Held: rc.heldOf,
		Poison: func(t *testing.T, _ sink.Sink, rec sink.Record) sink.Record {
			var doc map[string]any
			if err := json.Unmarshal(rec.Doc, &doc); err != nil {
				t.Fatal(err)
			}
			doc["poison"] = true
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			rec.Doc = b
			return rec
		},
	})
}

// What one request carries: the body's fields, and an id that stays the
// same when the version is sent again while the timestamp is each
// attempt's own.
func TestRequestContent(t *testing.T) {
	secret := newSecret()
	var mu sync.Mutex
	var got []http.Header
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, r *http.Request, _ message) bool {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		return false
	}))
	rec := sinktest.Product("a.b c%d", 42, "9.99")
	rec.UpdatedAt = time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.FixedZone("CET", 3600))
	rec.Doc = json.RawMessage(`{"product_id":"a.b c%d","fields":{"title":"<b>Mug & co</b>","price":"9.99"},"version":42}`)
	for range 2 { // a new process sends the same version again
		s := open(t, rc.addr(), "content", []string{secret})
		res, err := write(t, s, rec)
		if err != nil || res[0].Outcome != sink.Applied {
			t.Fatalf("Write: %v %v", res, err)
		}
	}
	body, ok := rc.lastBody("/content", rec.Key)
	if !ok {
		t.Fatal("the receiver holds nothing")
	}
	want := `{"type":"product.updated","key":"ns:a.b c%d","namespace":"ns","id":"a.b c%d","version":42,` +
		`"timestamp":"2023-11-14T21:13:20.123Z","data":{"product_id":"a.b c%d","fields":{"title":"<b>Mug & co</b>","price":"9.99"},"version":42}}`
	if string(body) != want {
		t.Fatalf("body\n%s\nwant\n%s", body, want)
	}
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	if id := got[0].Get("webhook-id"); id != "ns:a%2Eb%20c%25d:42" || got[1].Get("webhook-id") != id {
		t.Fatalf("webhook-ids %q and %q, want ns:a%%2Eb%%20c%%25d:42 both", id, got[1].Get("webhook-id"))
	}
	ts, err := strconv.ParseInt(got[0].Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Fatalf("webhook-timestamp %q is not now", got[0].Get("webhook-timestamp"))
	}
}

// A deleted record is product.deleted with null data.
func TestDeletedBody(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}})
	s := open(t, rc.addr(), "deleted", []string{secret})
	del := sinktest.Deleted("7", 9)
	del.UpdatedAt = time.UnixMilli(1700000000000)
	if res, err := write(t, s, del); err != nil || res[0].Outcome != sink.Applied {
		t.Fatalf("Write: %v %v", res, err)
	}
	body, _ := rc.lastBody("/deleted", "ns:7")
	want := `{"type":"product.deleted","key":"ns:7","namespace":"ns","id":"7","version":9,"timestamp":"2023-11-14T22:13:20.000Z","data":null}`
	if string(body) != want {
		t.Fatalf("body %s, want %s", body, want)
	}
}

// With two secrets (a rotation), each request verifies with either alone.
func TestTwoSecretsBothVerify(t *testing.T) {
	old, next := newSecret(), newSecret()
	rc := newReceiver(t, [][]string{{old}, {next}})
	s := open(t, rc.addr(), "rotation", []string{old, next})
	res, err := write(t, s, sinktest.Product("1", 1, "1.00"), sinktest.Deleted("2", 2))
	if err != nil || res[0].Outcome != sink.Applied || res[1].Outcome != sink.Applied {
		t.Fatalf("Write: %v %v", res, err)
	}
	if n := rc.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// And a receiver knowing only a third secret refuses them.
	r, err := s.request(context.Background(), sinktest.Product("1", 1, "1.00"))
	if err != nil {
		t.Fatal(err)
	}
	rq := &ingest.Request{Header: r.Header, Body: mustRead(t, r.Body), Received: time.Now()}
	if _, err := newVerifier(t, newSecret()).Verify(context.Background(), rq); !errors.Is(err, ingest.ErrBadSignature) {
		t.Fatalf("a request signed with other secrets: %v, want ErrBadSignature", err)
	}
}

func mustRead(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Versions at or below the last one delivered are not sent: lower is
// Stale, equal is Applied.
func TestRememberedVersionsAreNotSent(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}})
	s := open(t, rc.addr(), "remembered", []string{secret})
	write(t, s, sinktest.Product("1", 5, "1.00"), sinktest.Deleted("2", 6))
	before := rc.requests.Load()
	res, err := write(t, s, sinktest.Product("1", 5, "1.00"), sinktest.Product("2", 4, "2.00"))
	if err != nil || res[0].Outcome != sink.Applied || res[1].Outcome != sink.Stale {
		t.Fatalf("Write: %v %v, want applied and stale", res, err)
	}
	if n := rc.requests.Load() - before; n != 0 {
		t.Fatalf("%d requests for versions already delivered", n)
	}
}

// A 410 stops the sink: the records after it are not sent, this Write's
// and every later one's fail with ErrGone (not permanent: nothing is
// dead-lettered), and the Error log says so once.
func TestGoneStopsSending(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, _ *http.Request, m message) bool {
		if m.Key == "ns:2" {
			w.WriteHeader(http.StatusGone)
			return true
		}
		return false
	}))
	var logs bytes.Buffer
	var logMu sync.Mutex
	cfg := config.SinkWebhook{URL: "http://" + rc.addr() + "/gone/tok3n", Secrets: []string{secret}, Timeout: 5 * time.Second,
		AllowPrivate: true, Concurrency: 1}
	s, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := []sink.Record{sinktest.Product("1", 1, "1"), sinktest.Product("2", 1, "2"), sinktest.Product("3", 1, "3"), sinktest.Product("4", 1, "4")}
	res, err := write(t, s, batch...)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if res[0].Outcome != sink.Applied {
		t.Fatalf("record before the 410: %v %v", res[0].Outcome, res[0].Err)
	}
	for i, r := range res[1:] {
		if r.Outcome != sink.Failed || !errors.Is(r.Err, ErrGone) || sink.IsPermanent(r.Err) {
			t.Fatalf("record %d: %v %v, want a non-permanent ErrGone", i+1, r.Outcome, r.Err)
		}
	}
	if n := rc.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2 (none after the 410)", n)
	}
	for range 2 {
		res, err = write(t, s, sinktest.Product("5", 1, "5"), sinktest.Product("1", 2, "1"))
		if !errors.Is(err, ErrGone) || sink.IsPermanent(err) || res != nil {
			t.Fatalf("Write after the 410: %v %v, want a non-permanent ErrGone", res, err)
		}
	}
	if n := rc.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2 (none after the 410)", n)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "410 Gone") {
		t.Fatalf("log %q, want one Error about 410 Gone", logs.String())
	}
	if strings.Contains(logs.String(), "tok3n") || strings.Contains(res2err(res, err), "tok3n") {
		t.Fatalf("the URL's path was logged or put in an error: %q", logs.String())
	}
	// A new sink (a restart) sends again.
	s2 := open(t, rc.addr(), "gone/tok3n", []string{secret})
	if res, err := write(t, s2, sinktest.Product("5", 1, "5")); err != nil || res[0].Outcome != sink.Applied {
		t.Fatalf("Write after a restart: %v %v", res, err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func res2err(res []sink.Result, err error) string {
	s := fmt.Sprint(err)
	for _, r := range res {
		s += fmt.Sprint(r.Err)
	}
	return s
}

// Retry-After, as seconds or an HTTP date, becomes the *sink.RetryAfter's
// wait, whether the 429 fails the whole batch or one record of it.
func TestRetryAfter(t *testing.T) {
	secret := newSecret()
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, _ *http.Request, m message) bool {
		switch m.ID {
		case "seconds":
			w.Header().Set("Retry-After", "7")
		case "date":
			w.Header().Set("Retry-After", date)
		case "none":
		default:
			return false
		}
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}))
	s := open(t, rc.addr(), "throttled", []string{secret})

	_, err := write(t, s, sinktest.Product("seconds", 1, "1"))
	var ra *sink.RetryAfter
	if !errors.As(err, &ra) || ra.Wait != 7*time.Second || sink.IsPermanent(err) {
		t.Fatalf("429 with Retry-After: 7: %v, want a 7s RetryAfter", err)
	}
	res, err := write(t, s, sinktest.Product("date", 1, "1"), sinktest.Product("ok", 1, "1"))
	if err != nil || res[1].Outcome != sink.Applied || res[0].Outcome != sink.Failed {
		t.Fatalf("Write: %v %v, want failed and applied", res, err)
	}
	if !errors.As(res[0].Err, &ra) || ra.Wait < time.Second || ra.Wait > 3*time.Second || sink.IsPermanent(res[0].Err) {
		t.Fatalf("429 with Retry-After %s: %v, want a RetryAfter of 1 to 3 s", date, res[0].Err)
	}
	_, err = write(t, s, sinktest.Product("none", 1, "1"), sinktest.Product("seconds", 2, "1"))
	if !errors.As(err, &ra) || ra.Wait != 7*time.Second || !strings.Contains(err.Error(), "all 2 records failed") {
		t.Fatalf("two 429s: %v, want the longer (7s) wait", err)
	}
}

// The Retry-After parser: seconds, HTTP dates, and what is not either.
func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, v string
		want    time.Duration
	}{
		{"seconds", "120", 2 * time.Minute},
		{"zero", "0", 0},
		{"padded", " 5 ", 5 * time.Second},
		{"IMF date", "Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second},
		{"RFC 850 date", "Saturday, 01-Mar-25 12:01:00 GMT", time.Minute},
		{"past date", "Sat, 01 Mar 2025 11:00:00 GMT", 0},
		{"absent", "", 0},
		{"negative", "-5", 0},
		{"fraction", "1.5", 0},
		{"garbage", "soon", 0},
		{"huge seconds capped", "99999999999999999999", 0}, // overflows uint64: unreadable
		{"long seconds capped", "864000", time.Hour},
		{"far date capped", "Sun, 01 Mar 2026 12:00:00 GMT", time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryAfter(tc.v, now); got != tc.want {
				t.Fatalf("retryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

// How each status is classified, with the body's start in the reason.
func TestStatuses(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, _ *http.Request, m message) bool {
		code, _ := strconv.Atoi(m.ID)
		if code == 0 {
			return false
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "refused:\x00\tbecause\n\n"+strings.Repeat("é", 300))
		return true
	}))
	s := open(t, rc.addr(), "statuses", []string{secret})
	cases := []struct {
		code      int
		permanent bool
	}{{400, true}, {401, true}, {404, true}, {413, true}, {422, true}, {408, false}, {500, false}, {502, false}, {503, false}}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			res, err := write(t, s, sinktest.Product(strconv.Itoa(tc.code), 1, "1"), sinktest.Product("ok"+strconv.Itoa(tc.code), 1, "1"))
			if err != nil || res[0].Outcome != sink.Failed || sink.IsPermanent(res[0].Err) != tc.permanent || res[1].Outcome != sink.Applied {
				t.Fatalf("results %v, error %v; want failed (permanent %v) and applied", res, err, tc.permanent)
			}
			msg := res[0].Err.Error()
			if !strings.Contains(msg, strconv.Itoa(tc.code)) || !strings.Contains(msg, "refused:? because é") {
				t.Fatalf("reason %q lacks the status or the body's start", msg)
			}
			_, after, _ := strings.Cut(msg, "refused:")
			if n := len("refused:" + after); n > 200 {
				t.Fatalf("reason holds %d bytes of the body, want at most 200", n)
			}
		})
	}
}

// A redirect is not followed: the record fails for good and the Location
// is never visited.
func TestRedirectNotFollowed(t *testing.T) {
	secret := newSecret()
	var visited atomic.Int32
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, r *http.Request, _ message) bool {
		if r.URL.Path == "/elsewhere" {
			visited.Add(1)
			return false
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
		return true
	}))
	s := open(t, rc.addr(), "moved", []string{secret})
	res, err := write(t, s, sinktest.Product("1", 1, "1"))
	if err != nil || res[0].Outcome != sink.Failed || !sink.IsPermanent(res[0].Err) ||
		!strings.Contains(res[0].Err.Error(), "redirects are not followed") {
		t.Fatalf("Write: %v %v, want a permanent failure", res, err)
	}
	if visited.Load() != 0 || rc.requests.Load() != 1 {
		t.Fatalf("the redirect was followed (%d visits, %d requests)", visited.Load(), rc.requests.Load())
	}
}

// A receiver that never answers: the request ends at the configured
// timeout, as a transient error that does not name the URL's path.
func TestTimeout(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}}, answering(func(_ http.ResponseWriter, r *http.Request, _ message) bool {
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
		return true
	}))
	s := open(t, rc.addr(), "silent/s3cret", []string{secret}, func(c *config.SinkWebhook) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	_, err := write(t, s, sinktest.Product("1", 1, "1"))
	el := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || sink.IsPermanent(err) {
		t.Fatalf("Write: %v, want a transient timeout", err)
	}
	if el < 300*time.Millisecond || el > 5*time.Second {
		t.Fatalf("Write returned after %v, want about 300ms", el)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error names the URL's path: %v", err)
	}
}

// An error response's body is read up to 4 KiB, not whole: the sink
// closes the connection while the endpoint is still sending.
func TestLargeErrorBodyNotReadWhole(t *testing.T) {
	secret := newSecret()
	closed := make(chan struct{})
	rc := newReceiver(t, [][]string{{secret}}, answering(func(w http.ResponseWriter, r *http.Request, _ message) bool {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10))
		w.(http.Flusher).Flush()
		select { // the rest would come only after 20 s
		case <-r.Context().Done():
			close(closed)
		case <-time.After(20 * time.Second):
			_, _ = w.Write(bytes.Repeat([]byte("y"), 64<<10))
		}
		return true
	}))
	s := open(t, rc.addr(), "big", []string{secret}, func(c *config.SinkWebhook) { c.Timeout = 30 * time.Second })
	start := time.Now()
	res, err := write(t, s, sinktest.Product("1", 1, "1"))
	if err != nil || res[0].Outcome != sink.Failed || !sink.IsPermanent(res[0].Err) {
		t.Fatalf("Write: %v %v, want a permanent failure", res, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Write took %v: the body was read on", el)
	}
	if n := len(res[0].Err.Error()); n > 400 {
		t.Fatalf("the error is %d bytes long", n)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the sink kept the connection open")
	}
}

// Without AllowPrivate, an endpoint resolving to loopback is refused
// before connecting, as a transient error wrapping
// outbound.ErrRefusedAddress, and the receiver gets nothing.
func TestPrivateAddressRefused(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}})
	_, port, _ := net.SplitHostPort(rc.addr())
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			s := open(t, net.JoinHostPort(host, port), "ssrf", []string{secret}, func(c *config.SinkWebhook) { c.AllowPrivate = false })
			res, err := write(t, s, sinktest.Product("1", 1, "1"))
			if !errors.Is(err, outbound.ErrRefusedAddress) || sink.IsPermanent(err) {
				t.Fatalf("Write: %v %v, want a transient ErrRefusedAddress", res, err)
			}
		})
	}
	if n := rc.requests.Load(); n != 0 {
		t.Fatalf("the receiver got %d requests", n)
	}
}

// At most Concurrency requests are in flight at once, and that many are.
func TestConcurrencyBound(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}}, delaying(30*time.Millisecond))
	s := open(t, rc.addr(), "parallel", []string{secret}, func(c *config.SinkWebhook) { c.Concurrency = 3 })
	var batch []sink.Record
	for i := range 24 {
		batch = append(batch, sinktest.Product(strconv.Itoa(i), 1, "1"))
	}
	res, err := write(t, s, batch...)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	for i, r := range res {
		if r.Outcome != sink.Applied {
			t.Fatalf("record %d: %v %v", i, r.Outcome, r.Err)
		}
	}
	if m := rc.maxInFlight.Load(); m != 3 {
		t.Fatalf("at most %d requests were in flight, want 3", m)
	}
}

// New refuses what it cannot use, naming the secret's index, never the
// secret or the URL.
func TestNewRefuses(t *testing.T) {
	good := newSecret()
	cases := []struct {
		name, want string
		cfg        config.SinkWebhook
	}{
		{"not base64", "secrets[1]", config.SinkWebhook{URL: "https://partner.example/hook", Secrets: []string{good, "whsec_!!n0tbase64!!"}}},
		{"no prefix", "secrets[0]", config.SinkWebhook{URL: "https://partner.example/hook", Secrets: []string{"n0prefix" + good}}},
		{"empty key", "secrets[0]", config.SinkWebhook{URL: "https://partner.example/hook", Secrets: []string{"whsec_"}}},
		{"no secrets", "secret", config.SinkWebhook{URL: "https://partner.example/hook"}},
		{"relative URL", "url", config.SinkWebhook{URL: "/hook?token=t0ken", Secrets: []string{good}}},
		{"other scheme", "url", config.SinkWebhook{URL: "ftp://partner.example/t0ken", Secrets: []string{good}}},
		{"credentials", "url", config.SinkWebhook{URL: "https://user:pa55@partner.example/hook", Secrets: []string{good}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tc.want)
			}
			for _, secret := range []string{"n0tbase64", "n0prefix", "t0ken", "pa55", good[6:]} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error %q repeats %q", err, secret)
				}
			}
		})
	}
}

// A record the sink cannot encode fails for good without a request.
func TestUnencodableRecord(t *testing.T) {
	secret := newSecret()
	rc := newReceiver(t, [][]string{{secret}})
	s := open(t, rc.addr(), "bad", []string{secret})
	bad := sinktest.Product("1", 1, "1")
	bad.Doc = json.RawMessage(`{"price":`)
	empty := sinktest.Product("2", 1, "1")
	empty.Doc = nil
	res, err := write(t, s, bad, empty)
	if err != nil || !sink.IsPermanent(res[0].Err) || !sink.IsPermanent(res[1].Err) {
		t.Fatalf("Write: %v %v, want two permanent failures", res, err)
	}
	if n := rc.requests.Load(); n != 0 {
		t.Fatalf("%d requests", n)
	}
}
