package ingest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
)

// conformance describes one provider for the shared conformance suite that
// every provider runs (runConformance). The suite posts through a real
// HTTP server to an in-process broker and asserts, for every case, the
// status, the error body and exactly what reached Kafka.
type conformance struct {
	// source is the configured source. Its Secrets must be {"s1", "s0"}:
	// the suite signs with each (rotation) and with "wrong".
	source config.Source
	// path is the provider-compatible route for source (or /webhooks/{name}).
	path string
	// valid returns a valid body. Calls with different n must give
	// different deliveries (the suite sends several, and a provider may
	// recognise retries).
	valid func(n int) []byte
	// sign returns every header a sender adds for body signed with secret.
	sign func(secret string, body []byte) http.Header
	// wantKeys are the record keys one valid delivery writes, changes
	// first, then events, as a function of n.
	wantKeys func(n int) []string
	// okStatus is the success status (default 202).
	okStatus int
	// sigHeader names the signature header (for the missing and empty
	// cases); empty when the signature is not in a header (SNS).
	sigHeader string
	// missingStatus is the status for a missing or empty signature header
	// (default 400).
	missingStatus int
	// badSignatures are named header tampering cases: each gets a
	// validly signed request's headers and returns them altered, with the
	// status it must get.
	badSignatures []tamper
	// invalidBodies are signed bodies the payload parser must refuse with
	// 400 and an error containing the given text.
	invalidBodies []invalidBody
	// errorBody checks a refusal's JSON body (default: {"error": non-empty}).
	errorBody func(t *testing.T, body map[string]any)

	// seal, when set, delivers a payload for a scheme whose signature
	// travels in the body (SNS): it returns the body and the headers of
	// payload signed with secret, and sign is not used. valid, withID,
	// deepen and the invalid bodies are then payloads.
	seal func(secret string, payload []byte) ([]byte, http.Header)
	// alter returns a signed body changed so that its signature no longer
	// holds (default: a space inserted before its last byte).
	alter func(body []byte) []byte
	// withID returns a valid payload that writes one change, whose product
	// id is the JSON string literal id.
	withID func(id string) []byte
	// idField is how refusals name the field withID's id is in
	// ("field productId").
	idField string
	// keyPrefix is what precedes a product id in its record key
	// (default: the source's namespace and ":").
	keyPrefix string
	// deepen returns valid payload n grown to nest exactly depth levels
	// (default: nest).
	deepen func(n, depth int) []byte
	// unsignedID names the header carrying a delivery id that the
	// signature does not cover ("" when there is none).
	unsignedID string
	// resend says what an exact resend of a delivery is.
	resend resendRule
	// providers is the registry the source's provider is in (default:
	// the built-in providers; a fixture provider's test adds its own).
	providers registry
}

// resendRule is what the edge can tell about an exact resend of a
// delivery: the same body and the same headers.
type resendRule int

const (
	// resendRetry: a retry, recognised by the delivery's identity while
	// dedupe_window lasts, and written again with dedupe_window off.
	resendRetry resendRule = iota
	// resendRepeat: the scheme has neither a delivery identity nor a
	// signed time, so a resend cannot be told from a real repeat of the
	// same change (a price going 10, 12, 10) and is written again.
	resendRepeat
	// resendReplay: the signature binds a time, so a resend is recognised
	// for as long as that signature stays acceptable, even with
	// dedupe_window off, whatever unsigned delivery id it carries.
	resendReplay
)

type tamper struct {
	name   string
	alter  func(h http.Header)
	status int
}

type invalidBody struct {
	name    string
	body    []byte
	errHas  string
	wantErr func(msg string) bool // optional, instead of errHas
}

func (c *conformance) defaults() {
	if c.providers == nil {
		c.providers = providers()
	}
	if c.seal == nil {
		c.seal = func(secret string, payload []byte) ([]byte, http.Header) { return payload, c.sign(secret, payload) }
	}
	if c.alter == nil {
		c.alter = func(body []byte) []byte { return append(bytes.Clone(body[:len(body)-1]), ' ', body[len(body)-1]) }
	}
	if c.keyPrefix == "" {
		c.keyPrefix = c.source.Namespace + ":"
	}
	if c.deepen == nil {
		c.deepen = func(n, depth int) []byte { return nest(c.valid(n), depth) }
	}
	if c.okStatus == 0 {
		c.okStatus = http.StatusAccepted
	}
	if c.missingStatus == 0 {
		c.missingStatus = http.StatusBadRequest
	}
	if c.errorBody == nil {
		c.errorBody = func(t *testing.T, body map[string]any) {
			t.Helper()
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("refusal without a JSON error: %v", body)
			}
		}
	}
}

// errorText returns the refusal's error text, whatever its body shape.
func errorText(body map[string]any) string { s, _ := body["error"].(string); return s }

// padTo returns body grown to exactly n bytes by padding a JSON string field
// inside it, so that it stays a signed, otherwise valid JSON object.
func padTo(t *testing.T, body []byte, n int) []byte {
	t.Helper()
	i := bytes.LastIndexByte(body, '}')
	if i < 0 {
		t.Fatalf("body %q is not a JSON object", body)
	}
	pad := n - len(body) - len(`,"pad":""`)
	if pad < 0 {
		t.Fatalf("valid body is already %d bytes, over %d", len(body), n)
	}
	out := append([]byte{}, body[:i]...)
	out = append(out, `,"pad":"`...)
	out = append(out, bytes.Repeat([]byte("x"), pad)...)
	out = append(out, `"`...)
	return append(out, body[i:]...)
}

func runConformance(t *testing.T, c conformance, deps Deps) {
	c.defaults()
	startEdgeOn := func(t *testing.T, lc ListenerConfig, cfgs []config.Source, deps Deps, produceTimeout time.Duration, opts ...Option) *fixture {
		t.Helper()
		return startEdgeFrom(t, c.providers, lc, cfgs, deps, produceTimeout, opts...)
	}
	startEdge := func(t *testing.T, cfgs []config.Source, deps Deps, produceTimeout time.Duration, opts ...Option) *fixture {
		t.Helper()
		return startEdgeOn(t, edgeListener(produceTimeout), cfgs, deps, produceTimeout, opts...)
	}
	f := startEdge(t, []config.Source{c.source}, deps, time.Second)
	limit := f.src.MaxBody
	n := 0
	next := func() (int, []byte) { n++; return n, c.valid(n) }
	expect := []string{}
	do := func(t *testing.T, f *fixture, body io.Reader, length int64, h http.Header) (int, map[string]any, http.Header) {
		t.Helper()
		m := map[string]string{}
		for k := range h {
			m[k] = h.Get(k)
		}
		return f.postT(t, c.path, body, length, m)
	}
	send := func(t *testing.T, body []byte, h http.Header) (int, map[string]any, http.Header) {
		t.Helper()
		return do(t, f, bytes.NewReader(body), int64(len(body)), h)
	}
	deliver := func(t *testing.T, secret string, payload []byte) (int, map[string]any, http.Header) {
		t.Helper()
		body, h := c.seal(secret, payload)
		return send(t, body, h)
	}
	refused := func(t *testing.T, status, want int, body map[string]any) {
		t.Helper()
		if status != want {
			t.Fatalf("status %d, want %d (%v)", status, want, body)
		}
		c.errorBody(t, body)
		if msg := errorText(body); strings.Contains(msg, "s1") || strings.Contains(msg, "s0") {
			t.Fatalf("error leaks a secret: %q", msg)
		}
	}
	accepted := func(t *testing.T, status int, body map[string]any) {
		t.Helper()
		if status != c.okStatus {
			t.Fatalf("status %d, want %d (%v)", status, c.okStatus, body)
		}
	}
	check := func(t *testing.T, what string) { t.Helper(); checkKeys(t, f, what, expect) }
	// forge posts count deliveries signed with a wrong secret to edge,
	// each of which must be refused 401.
	forge := func(t *testing.T, edge *fixture, count int) {
		t.Helper()
		for range count {
			_, payload := next()
			body, h := c.seal("wrong", payload)
			status, resp, _ := do(t, edge, bytes.NewReader(body), int64(len(body)), h)
			refused(t, status, http.StatusUnauthorized, resp)
		}
	}

	for _, secret := range []string{"s1", "s0"} {
		t.Run("valid with secret "+secret, func(t *testing.T) {
			i, body := next()
			status, resp, _ := deliver(t, secret, body)
			accepted(t, status, resp)
			expect = append(expect, c.wantKeys(i)...)
			check(t, "after a valid delivery")
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		_, body := next()
		status, resp, _ := deliver(t, "wrong", body)
		refused(t, status, http.StatusUnauthorized, resp)
		check(t, "after a wrong secret")
	})
	if c.sigHeader != "" {
		for _, empty := range []bool{false, true} {
			t.Run(fmt.Sprintf("signature header missing (empty=%v)", empty), func(t *testing.T) {
				_, payload := next()
				body, h := c.seal("s1", payload)
				h.Del(c.sigHeader)
				if empty {
					h[http.CanonicalHeaderKey(c.sigHeader)] = []string{""}
				}
				status, resp, _ := send(t, body, h)
				refused(t, status, c.missingStatus, resp)
				check(t, "after a missing signature")
			})
		}
	}
	for _, tc := range c.badSignatures {
		t.Run("tampered: "+tc.name, func(t *testing.T) {
			i, payload := next()
			body, h := c.seal("s1", payload)
			tc.alter(h)
			status, resp, _ := send(t, body, h)
			if tc.status == 0 { // a variant the scheme accepts
				accepted(t, status, resp)
				expect = append(expect, c.wantKeys(i)...)
			} else {
				refused(t, status, tc.status, resp)
			}
			check(t, "after "+tc.name)
		})
	}
	t.Run("body altered after signing", func(t *testing.T) {
		_, payload := next()
		body, h := c.seal("s1", payload)
		status, resp, _ := send(t, c.alter(body), h)
		refused(t, status, http.StatusUnauthorized, resp)
		check(t, "after an altered body")
	})
	// sealedTo returns payload n padded so that its sealed body is exactly
	// size bytes.
	sealedTo := func(t *testing.T, payload []byte, size int) ([]byte, http.Header) {
		t.Helper()
		body, _ := c.seal("s1", payload)
		pad := size - (len(body) - len(payload))
		body, h := c.seal("s1", padTo(t, payload, pad))
		if len(body) != size { // the padding field's own quotes were escaped
			body, h = c.seal("s1", padTo(t, payload, pad-(len(body)-size)))
		}
		return body, h
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("limit+1 bytes (chunked=%v)", chunked), func(t *testing.T) {
			_, payload := next()
			big, h := sealedTo(t, payload, int(limit)+1)
			if len(big) != int(limit)+1 {
				t.Fatalf("sealed body is %d bytes, want %d", len(big), limit+1)
			}
			var status int
			var resp map[string]any
			if chunked {
				status, resp, _ = do(t, f, chunkedReader{bytes.NewReader(big)}, -1, h)
			} else {
				status, resp, _ = send(t, big, h)
			}
			refused(t, status, http.StatusRequestEntityTooLarge, resp)
			check(t, "after an oversized body")
		})
	}
	t.Run("exactly the limit is read", func(t *testing.T) {
		// A body of exactly the limit is read whole (it may still be
		// refused by the parser for its padding, never as too large).
		_, payload := next()
		full, h := sealedTo(t, payload, int(limit))
		status, resp, _ := send(t, full, h)
		if status == http.StatusRequestEntityTooLarge {
			t.Fatalf("a body of exactly the limit was refused as too large: %v", resp)
		}
		if status == c.okStatus {
			expect = append(expect, c.wantKeys(n)...)
		}
		check(t, "after a body at the limit")
	})
	invalid := append([]invalidBody{{name: "invalid JSON", body: []byte(`{"oops":`), errHas: ""}}, c.invalidBodies...)
	for _, tc := range invalid {
		t.Run("invalid body: "+tc.name, func(t *testing.T) {
			status, resp, _ := deliver(t, "s1", tc.body)
			refused(t, status, http.StatusBadRequest, resp)
			msg := errorText(resp)
			if tc.wantErr != nil && !tc.wantErr(msg) || tc.wantErr == nil && !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q does not say %q", msg, tc.errHas)
			}
			check(t, "after an invalid body")
		})
	}

	// The classes of attack of issue 10, each against every provider.
	t.Run("nesting depth", func(t *testing.T) {
		next()
		status, resp, _ := deliver(t, "s1", c.deepen(n, 20_000))
		refused(t, status, http.StatusBadRequest, resp)
		if msg := errorText(resp); !strings.HasSuffix(msg, "body nests deeper than 64 levels") {
			t.Fatalf("error %q does not say how deep a body may nest", msg)
		}
		check(t, "after a body nested 20,000 deep")
		i, _ := next()
		status, resp, _ = deliver(t, "s1", c.deepen(i, jsondepth.Default))
		accepted(t, status, resp)
		expect = append(expect, c.wantKeys(i)...)
		check(t, "after a body nested to the limit")
	})
	t.Run("invalid Unicode and control characters in ids", func(t *testing.T) {
		for _, tc := range pcIDCases {
			status, resp, _ := deliver(t, "s1", c.withID(tc.id))
			if tc.why == "" {
				accepted(t, status, resp)
				expect = append(expect, c.keyPrefix+tc.key)
			} else {
				refused(t, status, http.StatusBadRequest, resp)
				if msg := errorText(resp); !strings.HasSuffix(msg, c.idField+" "+tc.why) {
					t.Fatalf("%s: error %q, want it to end %q", tc.name, msg, c.idField+" "+tc.why)
				}
			}
			check(t, "after an id with "+tc.name)
		}
	})
	t.Run("an exact resend", func(t *testing.T) {
		i, payload := next()
		body, h := c.seal("s1", payload)
		for range 2 {
			status, resp, _ := send(t, body, h)
			accepted(t, status, resp)
		}
		expect = append(expect, c.wantKeys(i)...)
		if c.resend == resendRepeat {
			expect = append(expect, c.wantKeys(i)...)
		}
		check(t, "after a delivery and its exact resend")
		if c.unsignedID != "" {
			h = h.Clone()
			h.Set(c.unsignedID, h.Get(c.unsignedID)+"-next")
			status, resp, _ := send(t, body, h)
			accepted(t, status, resp)
			if c.resend != resendReplay {
				expect = append(expect, c.wantKeys(i)...)
			}
			check(t, "after a resend under a new unsigned delivery id")
		}
	})
	if c.unsignedID != "" {
		t.Run("dedupe on unsigned data", func(t *testing.T) {
			// A delivery id the signature does not cover, put on another
			// body, never makes the edge drop that body.
			i, first := next()
			b1, h1 := c.seal("s1", first)
			j, second := next()
			b2, h2 := c.seal("s1", second)
			h2.Set(c.unsignedID, h1.Get(c.unsignedID))
			status, resp, _ := send(t, b1, h1)
			accepted(t, status, resp)
			status, resp, _ = send(t, b2, h2)
			accepted(t, status, resp)
			expect = append(expect, c.wantKeys(i)...)
			expect = append(expect, c.wantKeys(j)...)
			check(t, "after two bodies under one unsigned delivery id")
		})
	}
	t.Run("resend with dedupe_window off", func(t *testing.T) {
		src := c.source
		src.DedupeWindow = -1
		off := startEdge(t, []config.Source{src}, deps, time.Second)
		i, payload := next()
		body, h := c.seal("s1", payload)
		for range 2 {
			status, resp, _ := do(t, off, bytes.NewReader(body), int64(len(body)), h)
			accepted(t, status, resp)
		}
		want := c.wantKeys(i)
		if c.resend != resendReplay {
			want = append(want, c.wantKeys(i)...)
		}
		checkKeys(t, off, "after a delivery and its exact resend", want)
	})
	t.Run("forgeries do not spend the rate limit", func(t *testing.T) {
		src := c.source
		src.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: 1}
		limited := startEdge(t, []config.Source{src}, deps, time.Second)
		forge(t, limited, 5)
		i, payload := next()
		body, h := c.seal("s1", payload)
		status, resp, _ := do(t, limited, bytes.NewReader(body), int64(len(body)), h)
		accepted(t, status, resp)
		_, payload = next()
		body, h = c.seal("s1", payload)
		status, resp, hdr := do(t, limited, bytes.NewReader(body), int64(len(body)), h)
		refused(t, status, http.StatusTooManyRequests, resp)
		if hdr.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		checkKeys(t, limited, "after forgeries and two real deliveries", c.wantKeys(i))
	})
	t.Run("forgeries spend their own address's refusal budget", func(t *testing.T) {
		budgeted := startEdge(t, []config.Source{c.source}, deps, time.Second, WithRefusalBudget(0.001, 3))
		forge(t, budgeted, 3)
		_, payload := next()
		body, h := c.seal("s1", payload)
		status, resp, _ := do(t, budgeted, bytes.NewReader(body), int64(len(body)), h)
		refused(t, status, http.StatusTooManyRequests, resp)
		if !strings.Contains(errorText(resp), "too many refused requests") {
			t.Fatalf("429 %v does not say why", resp)
		}
		checkKeys(t, budgeted, "after an address spent its refusal budget", nil)
	})
	t.Run("slow bodies do not delay a valid delivery", func(t *testing.T) {
		const slow = 40
		lc := ListenerConfig{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: guard,
			IdleTimeout: guard, MaxHeaderBytes: 64 << 10, MaxConnections: 1024}
		edge := startEdgeOn(t, lc, []config.Source{c.source}, deps, time.Second)
		addr := strings.TrimPrefix(edge.url, "http://")
		answers := make(chan int, slow)
		for range slow {
			_, payload := next()
			body, h := c.seal("s1", payload)
			conn := dial(t, addr)
			var head strings.Builder
			fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: edge\r\nContent-Length: %d\r\n", c.path, len(body))
			for k := range h {
				fmt.Fprintf(&head, "%s: %s\r\n", k, h.Get(k))
			}
			head.WriteString("\r\n")
			trickleRequest(t, conn, head.String(), body, 100*time.Millisecond, func(status int, _ error) { answers <- status })
		}
		await(t, edge.events.active, slow, "slow requests read")
		i, payload := next()
		body, h := c.seal("s1", payload)
		status, resp, _ := do(t, edge, bytes.NewReader(body), int64(len(body)), h)
		accepted(t, status, resp)
		if n := len(edge.events.closed); n != 0 {
			t.Fatalf("%d slow connections ended before the valid delivery was answered", n)
		}
		await(t, edge.events.closed, slow, "slow connections closed by the read timeout")
		for range slow {
			if status := <-answers; status >= 200 && status < 300 {
				t.Fatalf("a body sent slower than the read timeout was answered %d", status)
			}
		}
		checkKeys(t, edge, "after slow bodies and a valid delivery", c.wantKeys(i))
	})
	t.Run("Kafka unreachable, then back", func(t *testing.T) {
		i, payload := next()
		body, h := c.seal("s1", payload)
		kafkaBack := f.breakProduce()
		status, resp, hdr := send(t, body, h)
		refused(t, status, http.StatusServiceUnavailable, resp)
		if hdr.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		kafkaBack()
		deadline := time.Now().Add(15 * time.Second)
		for status != c.okStatus {
			if time.Now().After(deadline) {
				t.Fatalf("the same delivery was not accepted once Kafka was back: %d %v", status, resp)
			}
			time.Sleep(100 * time.Millisecond)
			status, resp, _ = send(t, body, h)
		}
		// The delivery is written; a batch in flight during the outage may
		// have landed too, so each key is there at least once.
		got := writtenKeys(t, f)
		for _, k := range c.wantKeys(i) {
			if !slices.Contains(got, k) {
				t.Fatalf("key %s of the retried delivery is not in Kafka: %v", k, got)
			}
		}
	})
}

// writtenKeys lists the record keys on the changes and events topics.
func writtenKeys(t *testing.T, f *fixture) []string {
	t.Helper()
	var keys []string
	for _, topic := range []string{testTopic, testEventsTopic} {
		for _, r := range f.recordsOf(topic) {
			keys = append(keys, string(r.Key))
		}
	}
	return keys
}

// checkKeys fails t unless f's topics hold exactly the keys want, in any
// order.
func checkKeys(t *testing.T, f *fixture, what string, want []string) {
	t.Helper()
	got := writtenKeys(t, f)
	a, b := slices.Clone(got), slices.Clone(want)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatalf("%s: Kafka holds %v, want %v", what, got, want)
	}
}

// chunkedReader hides a body's length so the request is sent chunked.
type chunkedReader struct{ r io.Reader }

func (c chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p) }

// hexSigner signs like LiSA: hex HMAC-SHA256 in header, plus extra headers.
func hexSigner(header, prefix string, extra http.Header) func(secret string, body []byte) http.Header {
	return func(secret string, body []byte) http.Header {
		h := extra.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Content-Type", "application/json")
		h.Set(header, prefix+fmt.Sprintf("%x", hmacSHA256([]byte(secret), body)))
		return h
	}
}

// hexTampering are the malformed-signature cases of a hex scheme.
func hexTampering(header, prefix string) []tamper {
	get := func(h http.Header) string { return strings.TrimPrefix(h.Get(header), prefix) }
	set := func(h http.Header, v string) { h.Set(header, v) }
	out := []tamper{
		{"non-hex", func(h http.Header) { set(h, prefix+strings.Repeat("zz", 32)) }, http.StatusBadRequest},
		{"truncated", func(h http.Header) { set(h, prefix+get(h)[:62]) }, http.StatusBadRequest},
		{"odd length", func(h http.Header) { set(h, prefix+get(h)[:63]) }, http.StatusBadRequest},
		{"uppercase hex accepted", func(h http.Header) { set(h, prefix+strings.ToUpper(get(h))) }, 0},
	}
	if prefix != "" {
		out = append(out,
			tamper{"prefix with nothing after it", func(h http.Header) { set(h, prefix) }, http.StatusBadRequest},
			tamper{"wrong prefix", func(h http.Header) { set(h, "sha1="+get(h)) }, http.StatusBadRequest},
		)
	}
	return out
}
