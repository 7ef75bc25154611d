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
}

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
	f := startEdge(t, []config.Source{c.source}, deps, time.Second)
	limit := f.src.MaxBody
	n := 0
	next := func() (int, []byte) { n++; return n, c.valid(n) }
	written := func() []string {
		var keys []string
		for _, topic := range []string{testTopic, testEventsTopic} {
			for _, r := range f.recordsOf(topic) {
				keys = append(keys, string(r.Key))
			}
		}
		return keys
	}
	expect := []string{}
	check := func(t *testing.T, what string) {
		t.Helper()
		got := written()
		a, b := slices.Clone(got), slices.Clone(expect)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("%s: Kafka holds %v, want %v", what, got, expect)
		}
	}
	do := func(t *testing.T, body io.Reader, length int64, h http.Header) (int, map[string]any, http.Header) {
		t.Helper()
		m := map[string]string{}
		for k := range h {
			m[k] = h.Get(k)
		}
		return f.postT(t, c.path, body, length, m)
	}
	send := func(t *testing.T, body []byte, h http.Header) (int, map[string]any, http.Header) {
		t.Helper()
		return do(t, bytes.NewReader(body), int64(len(body)), h)
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

	for _, secret := range []string{"s1", "s0"} {
		t.Run("valid with secret "+secret, func(t *testing.T) {
			i, body := next()
			status, resp, _ := send(t, body, c.sign(secret, body))
			if status != c.okStatus {
				t.Fatalf("status %d, want %d (%v)", status, c.okStatus, resp)
			}
			expect = append(expect, c.wantKeys(i)...)
			check(t, "after a valid delivery")
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		_, body := next()
		status, resp, _ := send(t, body, c.sign("wrong", body))
		refused(t, status, http.StatusUnauthorized, resp)
		check(t, "after a wrong secret")
	})
	if c.sigHeader != "" {
		for _, empty := range []bool{false, true} {
			t.Run(fmt.Sprintf("signature header missing (empty=%v)", empty), func(t *testing.T) {
				_, body := next()
				h := c.sign("s1", body)
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
			i, body := next()
			h := c.sign("s1", body)
			tc.alter(h)
			status, resp, _ := send(t, body, h)
			if tc.status == 0 { // a variant the scheme accepts
				if status != c.okStatus {
					t.Fatalf("status %d, want %d (%v)", status, c.okStatus, resp)
				}
				expect = append(expect, c.wantKeys(i)...)
			} else {
				refused(t, status, tc.status, resp)
			}
			check(t, "after "+tc.name)
		})
	}
	t.Run("body altered after signing", func(t *testing.T) {
		_, body := next()
		h := c.sign("s1", body)
		altered := append(bytes.Clone(body[:len(body)-1]), ' ', body[len(body)-1])
		status, resp, _ := send(t, altered, h)
		refused(t, status, http.StatusUnauthorized, resp)
		check(t, "after an altered body")
	})
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("limit+1 bytes (chunked=%v)", chunked), func(t *testing.T) {
			_, body := next()
			big := padTo(t, body, int(limit)+1)
			h := c.sign("s1", big)
			var status int
			var resp map[string]any
			if chunked {
				status, resp, _ = do(t, chunkedReader{bytes.NewReader(big)}, -1, h)
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
		_, body := next()
		full := padTo(t, body, int(limit))
		status, resp, _ := send(t, full, c.sign("s1", full))
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
			status, resp, _ := send(t, tc.body, c.sign("s1", tc.body))
			refused(t, status, http.StatusBadRequest, resp)
			msg := errorText(resp)
			if tc.wantErr != nil && !tc.wantErr(msg) || tc.wantErr == nil && !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q does not say %q", msg, tc.errHas)
			}
			check(t, "after an invalid body")
		})
	}
	t.Run("Kafka unreachable, then back", func(t *testing.T) {
		i, body := next()
		h := c.sign("s1", body)
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
		got := written()
		for _, k := range c.wantKeys(i) {
			if !slices.Contains(got, k) {
				t.Fatalf("key %s of the retried delivery is not in Kafka: %v", k, got)
			}
		}
	})
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
