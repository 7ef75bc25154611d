package ingest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// Regression tests of issue 10's weaknesses that live in the shared
// request pipeline (server.go): who pays for refusals, what a retry is
// recognised by, and what a replay is answered with.

// keysOf returns the record keys written to the changes topic, sorted
// (the topic has several partitions).
func (f *fixture) keysOf() []string {
	var keys []string
	for _, r := range f.records() {
		keys = append(keys, string(r.Key))
	}
	slices.Sort(keys)
	return keys
}

// postHeaders posts body with h, failing t on transport errors.
func (f *fixture) postHeaders(t *testing.T, path string, body []byte, h http.Header) (int, map[string]any, http.Header) {
	t.Helper()
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	return f.postT(t, path, bytes.NewReader(body), int64(len(body)), m)
}

// Weakness 1: forged requests never spend a source's rate limit, which is
// charged only after a delivery's signature is verified.
func TestForgeriesDoNotSpendTheSourceRateLimit(t *testing.T) {
	f := startEdge(t, lisaSource(func(s *config.Source) { s.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: 2} }), Deps{}, 5*time.Second)
	for i := range 20 {
		body := fmt.Appendf(nil, `{"productId":"forged%d"}`, i)
		h := lisaHeaders(body)
		h["X-Hmac-Signature"] = sign("guess", body)
		status, resp, _ := f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), h)
		if status != http.StatusUnauthorized || !strings.Contains(errorText(resp), "signature") {
			t.Fatalf("forgery %d: %d %v, want 401 about the signature", i, status, resp)
		}
	}
	var statuses []int
	for i := range 3 {
		body := fmt.Appendf(nil, `{"productId":"real%d"}`, i)
		status, _, _ := f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), lisaHeaders(body))
		statuses = append(statuses, status)
	}
	if fmt.Sprint(statuses) != "[202 202 429]" {
		t.Fatalf("real deliveries after forgeries got %v, want the source's whole burst of 2, then 429", statuses)
	}
	if got := f.keysOf(); !slices.Equal(got, []string{"shop-eu:real0", "shop-eu:real1"}) {
		t.Fatalf("Kafka holds %v, want the two real deliveries", got)
	}
}

// Weakness 1: refusals are charged to the client that caused them. An
// address past its refusal budget gets 429 before its body is read; the
// real sender's address is unaffected; X-Forwarded-For counts only from a
// trusted proxy, so a forger cannot name a fresh address per request.
func TestRefusalBudgetIsPerClient(t *testing.T) {
	proxy := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	post := func(t *testing.T, f *fixture, from, id, secret string) (int, map[string]any, http.Header) {
		t.Helper()
		body := fmt.Appendf(nil, `{"productId":"%s"}`, id)
		h := lisaHeaders(body)
		h["X-Hmac-Signature"] = sign(secret, body)
		if from != "" {
			h["X-Forwarded-For"] = from
		}
		return f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), h)
	}
	t.Run("behind a trusted proxy", func(t *testing.T) {
		f := startEdge(t, lisaSource(func(*config.Source) {}), Deps{}, 5*time.Second,
			WithRefusalBudget(0.001, 3), WithTrustedProxies(proxy))
		for i := range 3 {
			if status, resp, _ := post(t, f, "203.0.113.7", fmt.Sprint("f", i), "guess"); status != http.StatusUnauthorized {
				t.Fatalf("forgery %d: %d %v, want 401", i, status, resp)
			}
		}
		status, resp, h := post(t, f, "203.0.113.7", "f9", "s1")
		if status != http.StatusTooManyRequests || !strings.Contains(errorText(resp), "too many refused requests") || h.Get("Retry-After") == "" {
			t.Fatalf("the forger's address: %d %v %v, want 429 with Retry-After naming refused requests", status, resp, h)
		}
		if status, resp, _ := post(t, f, "198.51.100.1", "real", "s1"); status != http.StatusAccepted {
			t.Fatalf("the real sender: %d %v, want 202", status, resp)
		}
		if status, resp, _ := post(t, f, "2001:db8:1:2::99", "v6", "s1"); status != http.StatusAccepted {
			t.Fatalf("another network: %d %v, want 202", status, resp)
		}
		if got := f.keysOf(); !slices.Equal(got, []string{"shop-eu:real", "shop-eu:v6"}) {
			t.Fatalf("Kafka holds %v, want the two real deliveries", got)
		}
	})
	t.Run("forwarded addresses from an untrusted peer are ignored", func(t *testing.T) {
		f := startEdge(t, lisaSource(func(*config.Source) {}), Deps{}, 5*time.Second, WithRefusalBudget(0.001, 3))
		for i := range 3 {
			post(t, f, fmt.Sprintf("203.0.113.%d", i), fmt.Sprint("f", i), "guess")
		}
		if status, resp, _ := post(t, f, "203.0.113.200", "f9", "guess"); status != http.StatusTooManyRequests {
			t.Fatalf("a fresh X-Forwarded-For escaped the budget: %d %v", status, resp)
		}
		if got := f.keysOf(); len(got) != 0 {
			t.Fatalf("Kafka holds %v, want nothing", got)
		}
	})
	t.Run("an IPv6 client is charged by its /64", func(t *testing.T) {
		a, _ := clientPrefix("2001:db8:1:2::1")
		b, _ := clientPrefix("2001:db8:1:2:ffff::1")
		c, _ := clientPrefix("2001:db8:1:3::1")
		d, _ := clientPrefix("::ffff:203.0.113.7")
		if a != b || a == c || d != netip.MustParsePrefix("203.0.113.7/32") {
			t.Fatalf("prefixes %v %v %v %v", a, b, c, d)
		}
	})
}

// Weakness 4: a delivery id the signature does not cover (Shopify's
// X-Shopify-Webhook-Id) is remembered together with the body, so a
// captured delivery re-posted under the id the sender will use next does
// not make the edge drop the real delivery that then arrives with it.
func TestUnsignedDeliveryIDCannotSwallowARealDelivery(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "shop", Provider: "hmac", Namespace: "shop", Secrets: []string{"s1"},
		HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload, DedupeWindow: time.Hour}}, Deps{}, 5*time.Second)
	signed := func(body []byte, id string) http.Header {
		return http.Header{"X-Shopify-Webhook-Id": {id}, "X-Shopify-Topic": {"products/update"},
			"X-Shopify-Hmac-Sha256": {base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s1"), body))}}
	}
	first, next := []byte(`{"id":1,"title":"Old"}`), []byte(`{"id":1,"title":"New"}`)
	steps := []struct {
		what string
		body []byte
		id   string
	}{
		{"the sender's delivery 1", first, "d-1"},
		{"an attacker re-posts it as delivery 2", first, "d-2"},
		{"the sender's real delivery 2", next, "d-2"},
		{"the sender retries delivery 2", next, "d-2"},
	}
	for _, s := range steps {
		if status, resp, _ := f.postHeaders(t, "/webhooks/shop", s.body, signed(s.body, s.id)); status != http.StatusAccepted {
			t.Fatalf("%s: %d %v", s.what, status, resp)
		}
	}
	var titles []string
	for _, r := range f.records() {
		ch, err := f.serde.DecodeChange(t.Context(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		titles = append(titles, *ch.Fields.Title)
	}
	if !slices.Equal(titles, []string{"Old", "Old", "New"}) {
		t.Fatalf("Kafka holds titles %v, want Old, the replayed Old, and the real New once", titles)
	}
}

// Weakness 5: an exact replay of a delivery whose signature binds a time
// is answered without writing while that signature is still acceptable,
// under whatever unsigned delivery id it carries, and even with retry
// recognition (dedupe_window) turned off.
func TestReplayInsideToleranceIsNotWrittenAgain(t *testing.T) {
	t.Run("hmac with a signed timestamp and an unsigned id", func(t *testing.T) {
		stamped := *cfgStampedHMAC
		stamped.EventIDHeader = "X-Delivery"
		f := startEdge(t, []config.Source{{Name: "st", Provider: "hmac", Namespace: "st", Secrets: []string{"s1"},
			HMAC: &stamped, Payload: cfgStampedPayload, DedupeWindow: -1}}, Deps{}, 5*time.Second)
		body := []byte(`{"type":"product.updated","data":{"id":"p1","price":"10"}}`)
		h := cfgStampedSigner("X-Signature", "v1=", "X-Timestamp")("s1", body)
		for i, id := range []string{"d-1", "d-1", "d-2", "d-3"} {
			h.Set("X-Delivery", id)
			status, resp, _ := f.postHeaders(t, "/webhooks/st", body, h)
			if status != http.StatusAccepted || resp["accepted"] != float64(1) {
				t.Fatalf("post %d: %d %v, want 202 accepted 1", i, status, resp)
			}
		}
		if got := f.keysOf(); !slices.Equal(got, []string{"st:p1"}) {
			t.Fatalf("Kafka holds %v, want the delivery once", got)
		}
	})
	t.Run("standard webhooks with dedupe off", func(t *testing.T) {
		src := cfgSWSource("sw")
		src.DedupeWindow = -1
		f := startEdge(t, []config.Source{src}, Deps{}, 5*time.Second)
		body := []byte(`{"type":"product.updated","data":{"id":"p1"}}`)
		h := cfgSWSigner("s1", body)
		for range 3 {
			if status, resp, _ := f.postHeaders(t, "/webhooks/sw", body, h); status != http.StatusAccepted {
				t.Fatalf("%d %v", status, resp)
			}
		}
		// A new message with the same body is a real change: written.
		if status, resp, _ := f.postHeaders(t, "/webhooks/sw", body, cfgSWSigner("s1", body)); status != http.StatusAccepted {
			t.Fatalf("%d %v", status, resp)
		}
		if got := f.keysOf(); !slices.Equal(got, []string{"sw:p1", "sw:p1"}) {
			t.Fatalf("Kafka holds %v, want the first message once and the second once", got)
		}
	})
	t.Run("SNS with dedupe off", func(t *testing.T) {
		b := newSNSBed(t)
		f := startEdge(t, []config.Source{b.source("tipser-main", func(s *config.Source) { s.DedupeWindow = -1 })}, b.deps(), 5*time.Second)
		m := b.sign(t, b.notification("m-1", tipserEvent("product-changed", `{"productId":"7"}`)), "2")
		for range 3 {
			if status, resp := postSNS(t, f, "tipser-main", m); status != http.StatusAccepted {
				t.Fatalf("%d %v", status, resp)
			}
		}
		if got := tipserChangeKeys(t, f); len(got) != 1 {
			t.Fatalf("Kafka holds %v, want the message once", got)
		}
	})
}

// Weakness 2: with raw message delivery the Tipser body names no time or
// id, so two real changes of one product have identical bodies. The edge
// recognises retries by SNS's message id (with the body), never by the
// body alone, and refuses a raw delivery without one.
func TestTipserRawDeliveryRecognisesRetriesByMessageID(t *testing.T) {
	b := newSNSBed(t)
	basic := func(s *config.Source) { s.BasicAuth = &config.BasicAuth{Username: "sns", Passwords: []string{"pw"}} }
	f := startEdge(t, []config.Source{b.source("tipser-basic", basic)}, b.deps(), 5*time.Second)
	event := []byte(tipserEvent("product-changed", `{"productId":"raw"}`))
	other := []byte(tipserEvent("product-changed", `{"productId":"other"}`))
	post := func(body []byte, id string) (int, map[string]any) {
		h := http.Header{"Content-Type": {"text/plain; charset=UTF-8"}, "X-Amz-Sns-Rawdelivery": {"true"},
			"X-Amz-Sns-Message-Type": {"Notification"}, "X-Amz-Sns-Topic-Arn": {tipserTopic},
			"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("sns:pw"))}}
		if id != "" {
			h.Set("X-Amz-Sns-Message-Id", id)
		}
		status, resp, _ := f.postHeaders(t, "/webhooks/tipser-basic", body, h)
		return status, resp
	}
	for _, s := range []struct {
		what   string
		body   []byte
		id     string
		status int
	}{
		{"the first change", event, "m-1", 202},
		{"the product changes again", event, "m-2", 202},
		{"SNS retries the second", event, "m-2", 202},
		{"a different body under a used id", other, "m-2", 202},
		{"no message id", event, "", 400},
	} {
		status, resp := post(s.body, s.id)
		if status != s.status {
			t.Fatalf("%s: %d %v, want %d", s.what, status, resp, s.status)
		}
		if status == 400 && !strings.Contains(errorText(resp), "x-amz-sns-message-id") {
			t.Fatalf("%s: error %v does not name the header", s.what, resp)
		}
	}
	var got []string
	for _, ch := range tipserChanges(t, f) {
		got = append(got, ch.Key()+"@"+ch.EventID)
	}
	if !slices.Equal(got, []string{"tip:raw@m-1", "tip:raw@m-2", "tip:other@m-2"}) {
		t.Fatalf("Kafka holds %v, want both real changes and the other body, each once", got)
	}
}
