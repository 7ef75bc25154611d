package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// Presets as docs/providers-configurable.md writes them.
var (
	cfgGitHubHMAC     = &config.HMAC{Header: "X-Hub-Signature-256", Prefix: "sha256=", Encoding: "hex"}
	cfgShopifyHMAC    = &config.HMAC{Header: "X-Shopify-Hmac-Sha256", Encoding: "base64", EventIDHeader: "X-Shopify-Webhook-Id"}
	cfgShopifyPayload = &config.Payload{IDPointer: "/id", TypeHeader: "X-Shopify-Topic", DeleteTypes: []string{"products/delete"}}
	// cfgStampedHMAC signs "<timestamp>.<body>", as Stripe does (in a header of its own).
	cfgStampedHMAC    = &config.HMAC{Header: "X-Signature", Prefix: "v1=", Signed: "{timestamp}.{body}", TimestampHeader: "X-Timestamp"}
	cfgStampedPayload = &config.Payload{IDPointer: "/data/id", TypePointer: "/type", DeleteTypes: []string{"product.deleted"}}
)

// cfgB64Signer signs like Shopify: base64 HMAC-SHA256 of the body in header,
// plus the headers extra returns for each request.
func cfgB64Signer(header string, extra func() http.Header) func(secret string, body []byte) http.Header {
	return func(secret string, body []byte) http.Header {
		h := extra()
		h.Set("Content-Type", "application/json")
		h.Set(header, base64.StdEncoding.EncodeToString(hmacSHA256([]byte(secret), body)))
		return h
	}
}

// cfgB64Tampering are the malformed-signature cases of a base64 scheme.
func cfgB64Tampering(header string) []tamper {
	alter := func(f func(string) string) func(h http.Header) {
		return func(h http.Header) { h.Set(header, f(h.Get(header))) }
	}
	return []tamper{
		{"not base64", alter(func(string) string { return strings.Repeat("!", 44) }), http.StatusBadRequest},
		{"truncated", alter(func(v string) string { return v[:40] }), http.StatusBadRequest},
		{"padding stripped", alter(func(v string) string { return strings.TrimRight(v, "=") }), http.StatusBadRequest},
		{"hex instead of base64", alter(func(string) string { return strings.Repeat("ab", 32) }), http.StatusBadRequest},
		{"another body's signature", alter(func(string) string {
			return base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s1"), []byte("{}")))
		}), http.StatusUnauthorized},
	}
}

// cfgStampedSigner signs "<now>.<body>" in hex after prefix, with the
// timestamp in tsHeader.
func cfgStampedSigner(header, prefix, tsHeader string) func(secret string, body []byte) http.Header {
	return func(secret string, body []byte) http.Header {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set(tsHeader, ts)
		h.Set(header, prefix+hex.EncodeToString(hmacSHA256([]byte(secret), append([]byte(ts+"."), body...))))
		return h
	}
}

func TestGenericHMACConformance(t *testing.T) {
	t.Run("GitHub style: hex with prefix", func(t *testing.T) {
		runConformance(t, conformance{
			source: config.Source{Name: "gh", Provider: "hmac", Namespace: "gh", Secrets: []string{"s1", "s0"},
				HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}},
			path:          "/webhooks/gh",
			valid:         func(n int) []byte { return fmt.Appendf(nil, `{"id":"p%d","title":"Shoe","price":19.99}`, n) },
			sign:          hexSigner("X-Hub-Signature-256", "sha256=", nil),
			withID:        func(id string) []byte { return []byte(`{"id":` + id + `}`) },
			idField:       "field /id",
			resend:        resendRepeat,
			wantKeys:      func(n int) []string { return []string{fmt.Sprintf("gh:p%d", n)} },
			sigHeader:     "X-Hub-Signature-256",
			badSignatures: hexTampering("X-Hub-Signature-256", "sha256="),
			invalidBodies: []invalidBody{
				{name: "missing id", body: []byte(`{"title":"Shoe"}`), errHas: "missing field /id"},
				{name: "id is an object", body: []byte(`{"id":{}}`), errHas: "field /id must be a string or an integer"},
				{name: "id is a fraction", body: []byte(`{"id":1.5}`), errHas: "/id"},
				{name: "JSON array", body: []byte(`[{"id":"1"}]`), errHas: "not a JSON object"},
				{name: "invalid UTF-8", body: []byte("{\"id\":\"\xff\"}"), errHas: "UTF-8"},
				{name: "id too long", body: []byte(`{"id":"` + strings.Repeat("x", maxIDLen+1) + `"}`), errHas: "/id"},
			},
		}, Deps{})
	})
	t.Run("Shopify: base64 with delivery id", func(t *testing.T) {
		runConformance(t, conformance{
			source: config.Source{Name: "shop", Provider: "hmac", Namespace: "shop", Secrets: []string{"s1", "s0"},
				HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload, DedupeWindow: time.Minute},
			path:  "/webhooks/shop",
			valid: func(n int) []byte { return fmt.Appendf(nil, `{"id":%d,"title":"Shoe","vendor":"Acme"}`, 1000+n) },
			sign: cfgB64Signer("X-Shopify-Hmac-Sha256", func() http.Header {
				return http.Header{"X-Shopify-Topic": {"products/update"}, "X-Shopify-Webhook-Id": {rand.Text()}}
			}),
			withID:        func(id string) []byte { return []byte(`{"id":` + id + `}`) },
			idField:       "field /id",
			unsignedID:    "X-Shopify-Webhook-Id",
			wantKeys:      func(n int) []string { return []string{fmt.Sprintf("shop:%d", 1000+n)} },
			sigHeader:     "X-Shopify-Hmac-Sha256",
			badSignatures: cfgB64Tampering("X-Shopify-Hmac-Sha256"),
			invalidBodies: []invalidBody{
				{name: "missing id", body: []byte(`{"title":"Shoe"}`), errHas: "missing field /id"},
				{name: "id null", body: []byte(`{"id":null}`), errHas: "missing field /id"},
			},
		}, Deps{})
	})
	t.Run("timestamp template", func(t *testing.T) {
		runConformance(t, conformance{
			source: config.Source{Name: "stamped", Provider: "hmac", Namespace: "st", Secrets: []string{"s1", "s0"},
				HMAC: cfgStampedHMAC, Payload: cfgStampedPayload, MaxBodyBytes: 64 << 10},
			path: "/webhooks/stamped",
			valid: func(n int) []byte {
				return fmt.Appendf(nil, `{"type":"product.updated","data":{"id":"p%d","title":"Shoe"}}`, n)
			},
			sign:      cfgStampedSigner("X-Signature", "v1=", "X-Timestamp"),
			withID:    func(id string) []byte { return []byte(`{"type":"product.updated","data":{"id":` + id + `}}`) },
			idField:   "field /data/id",
			resend:    resendReplay,
			wantKeys:  func(n int) []string { return []string{fmt.Sprintf("st:p%d", n)} },
			sigHeader: "X-Signature",
			badSignatures: append(hexTampering("X-Signature", "v1="),
				tamper{"timestamp missing", func(h http.Header) { h.Del("X-Timestamp") }, http.StatusBadRequest},
				tamper{"timestamp not digits", func(h http.Header) { h.Set("X-Timestamp", "+"+h.Get("X-Timestamp")) }, http.StatusBadRequest},
				tamper{"timestamp moved by a second", func(h http.Header) { h.Set("X-Timestamp", cfgShiftUnix(h.Get("X-Timestamp"), 1)) }, http.StatusUnauthorized},
				tamper{"timestamp an hour old", func(h http.Header) { h.Set("X-Timestamp", cfgShiftUnix(h.Get("X-Timestamp"), -3600)) }, http.StatusUnauthorized},
			),
			invalidBodies: []invalidBody{
				{name: "missing nested id", body: []byte(`{"type":"product.updated","data":{}}`), errHas: "missing field /data/id"},
				{name: "type not a string", body: []byte(`{"type":7,"data":{"id":"p"}}`), errHas: "field /type must be a string"},
			},
		}, Deps{})
	})
}

func cfgShiftUnix(ts string, by int64) string {
	n, _ := strconv.ParseInt(ts, 10, 64)
	return strconv.FormatInt(n+by, 10)
}

// The GitHub documentation's vector passes Verify, and Sign reproduces it.
func TestGenericHMACGitHubVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "gh", Provider: "hmac", Secrets: []string{"It's a Secret to Everybody"},
		HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}})
	body := []byte("Hello, World!")
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Hub-Signature-256": {want}}, Body: body}); err != nil {
		t.Fatalf("GitHub vector refused: %v", err)
	}
	if got := src.Adapter.(Signer).Sign(body).Get("X-Hub-Signature-256"); got != want {
		t.Fatalf("Sign gives %s, want %s", got, want)
	}
	err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Hub-Signature-256": {want}}, Body: []byte("Hello, World?")})
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("altered body: %v, want ErrBadSignature", err)
	}
}

// A "{timestamp}.{body}" signature computed independently, with
// python3 -c "import hmac,hashlib; print(hmac.new(b'stamp-secret', b'1700000000.{\"type\":\"product.deleted\",\"data\":{\"id\":\"p-9\"}}', hashlib.sha256).hexdigest())"
func TestGenericHMACTimestampTemplateVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "st", Provider: "hmac", Secrets: []string{"stamp-secret"}, HMAC: cfgStampedHMAC, Payload: cfgStampedPayload})
	body := []byte(`{"type":"product.deleted","data":{"id":"p-9"}}`)
	req := &Request{Header: http.Header{
		"X-Signature": {"v1=88de5c40ebd2e6aaa5498126c98edf04a975f7421f3bff23c968dddb7ee53a03"},
		"X-Timestamp": {"1700000000"},
	}, Body: body, Received: time.Unix(1700000000, 0)}
	if err := verifyErr(t.Context(), src, req); err != nil {
		t.Fatalf("vector refused: %v", err)
	}
	b, err := normalizeSigned(t, src, req)
	if err != nil {
		t.Fatal(err)
	}
	if ch := b.Changes[0]; ch.ProductID != "p-9" || !ch.Deleted || ch.EventType != "product.deleted" {
		t.Fatalf("change %+v, want a deletion of p-9", ch)
	}
}

// Shopify's shape end to end: a signed update, a delete type that becomes
// a deletion, and a retried delivery (same X-Shopify-Webhook-Id) answered
// without a second record. Signatures computed independently, with
// python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'shpss_0123456789abcdef', BODY, hashlib.sha256).digest()).decode())"
func TestGenericHMACShopifyPreset(t *testing.T) {
	cfg := config.Source{Name: "shopify", Provider: "hmac", Namespace: "shop", Secrets: []string{"shpss_0123456789abcdef"},
		HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload, DedupeWindow: time.Minute}
	f := startEdge(t, []config.Source{cfg}, Deps{}, 5*time.Second)
	update := []byte(`{"id":788032119674292922,"title":"Example T-Shirt","vendor":"Acme","updated_at":"2021-12-31T19:00:00-05:00"}`)
	del := []byte(`{"id":788032119674292922}`)
	post := func(body []byte, sig, topic, webhookID string) (int, map[string]any) {
		t.Helper()
		status, resp, _ := f.post("/webhooks/shopify", bytes.NewReader(body), int64(len(body)), map[string]string{
			"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": sig,
			"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhookID,
		})
		return status, resp
	}
	if status, resp := post(update, "NmejeqmGw4SaJnHoklKzopZeuAowraAdY9AT/ceLI3Q=", "products/update", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"); status != http.StatusAccepted {
		t.Fatalf("update: %d %v", status, resp)
	}
	for range 2 { // the second is Shopify retrying the same delivery
		if status, resp := post(del, "eQezaoqbELC+WaER1/h9AB37LgA3M4SJyJ+5KieyoOU=", "products/delete", "0f4b0a4e-0d7c-4c3e-9a43-5a1f0d3c6f10"); status != http.StatusAccepted || resp["accepted"] != 1.0 {
			t.Fatalf("delete: %d %v", status, resp)
		}
	}
	recs := f.records()
	if len(recs) != 2 {
		t.Fatalf("want 2 records (update, delete once), got %d", len(recs))
	}
	var got []schemas.Change
	for _, r := range recs {
		if string(r.Key) != "shop:788032119674292922" {
			t.Fatalf("key %q", r.Key)
		}
		ch, err := f.serde.DecodeChange(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ch)
	}
	up, gone := got[0], got[1]
	if up.Deleted || up.EventType != "products/update" || up.EventID != "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043" ||
		up.Provider != "hmac" || up.Resource != "product" || *up.Fields.Title != "Example T-Shirt" || *up.Fields.Brand != "Acme" ||
		!up.OccurredAt.Equal(time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)) || up.Raw != string(update) {
		t.Fatalf("update decoded wrong: %+v", up)
	}
	if !gone.Deleted || gone.EventType != "products/delete" || gone.EventID != "0f4b0a4e-0d7c-4c3e-9a43-5a1f0d3c6f10" {
		t.Fatalf("delete decoded wrong: %+v", gone)
	}
}

// A signed timestamp exactly at the tolerance passes; one second beyond, in
// either direction, is ErrStale (401). Time is the server's clock; one
// source has the default tolerance (5m), the other sets 2m.
func TestGenericHMACTimestampTolerance(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	stamped := func(name string, tolerance time.Duration) config.Source {
		return config.Source{Name: name, Provider: "hmac", Namespace: name, Secrets: []string{"s1"},
			HMAC:    &config.HMAC{Header: "X-Signature", Signed: "{timestamp}.{body}", TimestampHeader: "X-Timestamp", Tolerance: tolerance},
			Payload: &config.Payload{IDPointer: "/id"}}
	}
	f := startEdge(t, []config.Source{stamped("default", 0), stamped("two", 2*time.Minute)}, Deps{}, 5*time.Second,
		withClock(func() time.Time { return now }))
	accepted := 0
	for _, src := range []struct {
		name      string
		tolerance time.Duration
	}{{"default", 5 * time.Minute}, {"two", 2 * time.Minute}} {
		for i, tc := range []struct {
			name   string
			offset time.Duration
			status int
		}{
			{"exactly tolerance old", -src.tolerance, http.StatusAccepted},
			{"exactly tolerance ahead", src.tolerance, http.StatusAccepted},
			{"a second too old", -src.tolerance - time.Second, http.StatusUnauthorized},
			{"a second too far ahead", src.tolerance + time.Second, http.StatusUnauthorized},
		} {
			t.Run(src.name+": "+tc.name, func(t *testing.T) {
				body := fmt.Appendf(nil, `{"id":"p%d"}`, i)
				ts := strconv.FormatInt(now.Add(tc.offset).Unix(), 10)
				status, resp, _ := f.postT(t, "/webhooks/"+src.name, bytes.NewReader(body), int64(len(body)), map[string]string{
					"X-Timestamp": ts, "X-Signature": hex.EncodeToString(hmacSHA256([]byte("s1"), append([]byte(ts+"."), body...))),
				})
				if status != tc.status {
					t.Fatalf("status %d, want %d (%v)", status, tc.status, resp)
				}
				if status == http.StatusUnauthorized && !strings.Contains(errorText(resp), ErrStale.Error()) {
					t.Fatalf("error %q is not ErrStale", errorText(resp))
				}
				if status == http.StatusAccepted {
					accepted++
				}
			})
		}
	}
	if n := len(f.records()); n != accepted || n != 4 {
		t.Fatalf("want 4 records, got %d", n)
	}
}

// Verify's refusals, each with its sentinel (direct calls: what HTTP cannot
// carry, such as a line break, is covered too).
func TestGenericHMACVerifyRefusals(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"p"}`)
	mac := hmacSHA256([]byte("s1"), body)
	hexSrc := oneSource(t, config.Source{Name: "h", Provider: "hmac", Secrets: []string{"s1", "s0"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}})
	b64Src := oneSource(t, config.Source{Name: "b", Provider: "hmac", Secrets: []string{"s1"}, HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload})
	tsSrc := oneSource(t, config.Source{Name: "t", Provider: "hmac", Secrets: []string{"s1"}, HMAC: cfgStampedHMAC, Payload: cfgStampedPayload})
	tsMac := hex.EncodeToString(hmacSHA256([]byte("s1"), append([]byte("1700000000."), body...)))
	b64 := base64.StdEncoding.EncodeToString(mac)
	for _, tc := range []struct {
		name string
		src  *Source
		hdr  http.Header
		want error // nil: accepted
	}{
		{"hex valid", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac)}}, nil},
		{"hex uppercase", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + strings.ToUpper(hex.EncodeToString(mac))}}, nil},
		{"hex rotated secret", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + sign("s0", body)}}, nil},
		{"hex wrong secret", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + sign("wrong", body)}}, ErrBadSignature},
		{"hex missing", hexSrc, http.Header{}, ErrMissingSignature},
		{"hex empty", hexSrc, http.Header{"X-Hub-Signature-256": {""}}, ErrMissingSignature},
		{"hex without prefix", hexSrc, http.Header{"X-Hub-Signature-256": {hex.EncodeToString(mac)}}, ErrMalformedSignature},
		{"hex prefix in other case", hexSrc, http.Header{"X-Hub-Signature-256": {"SHA256=" + hex.EncodeToString(mac)}}, ErrMalformedSignature},
		{"hex prefix only", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256="}}, ErrMalformedSignature},
		{"hex with line break", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac) + "\n"}}, ErrMalformedSignature},
		{"hex of 31 bytes", hexSrc, http.Header{"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac[:31])}}, ErrMalformedSignature},
		{"base64 valid", b64Src, http.Header{"X-Shopify-Hmac-Sha256": {b64}}, nil},
		{"base64 with embedded newline", b64Src, http.Header{"X-Shopify-Hmac-Sha256": {b64[:20] + "\n" + b64[20:]}}, ErrMalformedSignature},
		{"base64 with embedded CR", b64Src, http.Header{"X-Shopify-Hmac-Sha256": {b64[:20] + "\r" + b64[20:]}}, ErrMalformedSignature},
		{"base64 url alphabet", b64Src, http.Header{"X-Shopify-Hmac-Sha256": {base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))}}, ErrMalformedSignature},
		{"base64 non-canonical padding bits", b64Src, http.Header{"X-Shopify-Hmac-Sha256": {b64[:42] + "B="}}, ErrMalformedSignature},
		{"timestamp valid", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {"1700000000"}}, nil},
		{"timestamp missing", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}}, ErrMissingSignature},
		{"timestamp signed but another sent", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {"1700000001"}}, ErrBadSignature},
		{"timestamp with leading zero", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {"01700000000"}}, ErrBadSignature},
		{"timestamp negative", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {"-1700000000"}}, ErrMalformedSignature},
		{"timestamp fractional", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {"1700000000.5"}}, ErrMalformedSignature},
		{"timestamp beyond int64", tsSrc, http.Header{"X-Signature": {"v1=" + tsMac}, "X-Timestamp": {strings.Repeat("9", 30)}}, ErrStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t.Context(), tc.src, &Request{Header: tc.hdr, Body: body, Received: now})
			wantErrIs(t, err, tc.want)
			if err != nil && strings.Contains(err.Error(), hex.EncodeToString(mac)[:16]) {
				t.Fatalf("error leaks the signature: %v", err)
			}
		})
	}
}

// Normalize maps the payload as configured: nested ids, types from the body
// or a header, delete types, resource, and typed fields of the object
// holding the id.
func TestGenericHMACNormalize(t *testing.T) {
	received := time.Unix(1_700_000_000, 0).UTC()
	for _, tc := range []struct {
		name    string
		payload *config.Payload
		hdr     http.Header
		body    string
		want    schemas.Change
		errHas  string
	}{
		{
			name:    "top-level id, no type",
			payload: &config.Payload{IDPointer: "/id"},
			body:    `{"id":42,"title":"Mug","price":"9.50","currency":"EUR","in_stock":true,"updated_at":"2026-01-02T03:04:05Z"}`,
			want: schemas.Change{ProductID: "42", EventType: "updated", Resource: "product", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
				Fields: schemas.Fields{Title: cfgStr("Mug"), Price: cfgStr("9.50"), Currency: cfgStr("EUR"), Availability: cfgStr("in_stock")}},
		},
		{
			name:    "nested id, type in body, fields of the holder, time from the top",
			payload: &config.Payload{IDPointer: "/data/object/id", TypePointer: "/type", Resource: "variant"},
			body:    `{"type":"variant.updated","timestamp":"2026-01-02T03:04:05Z","data":{"object":{"id":"v1","name":"Blue","sku":"B-1"}},"title":"not me"}`,
			want: schemas.Change{ProductID: "v1", EventType: "variant.updated", Resource: "variant", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
				Fields: schemas.Fields{Title: cfgStr("Blue"), SKU: cfgStr("B-1")}},
		},
		{
			name:    "escaped member names and array index",
			payload: &config.Payload{IDPointer: "/items/1/a~1b~0c"},
			body:    `{"items":[{"a/b~c":"first"},{"a/b~c":"second"}]}`,
			want:    schemas.Change{ProductID: "second", EventType: "updated", Resource: "product"},
		},
		{
			name:    "delete type from header",
			payload: &config.Payload{IDPointer: "/id", TypeHeader: "X-Topic", DeleteTypes: []string{"products/delete"}},
			hdr:     http.Header{"X-Topic": {"products/delete"}},
			body:    `{"id":"p"}`,
			want:    schemas.Change{ProductID: "p", EventType: "products/delete", Resource: "product", Deleted: true},
		},
		{
			name:    "delete types match exactly",
			payload: &config.Payload{IDPointer: "/id", TypePointer: "/type", DeleteTypes: []string{"products/delete"}},
			body:    `{"id":"p","type":"Products/Delete"}`,
			want:    schemas.Change{ProductID: "p", EventType: "Products/Delete", Resource: "product"},
		},
		{
			name:    "null type is no type",
			payload: &config.Payload{IDPointer: "/id", TypePointer: "/type"},
			body:    `{"id":"p","type":null}`,
			want:    schemas.Change{ProductID: "p", EventType: "updated", Resource: "product"},
		},
		{name: "missing nested id", payload: &config.Payload{IDPointer: "/data/id"}, body: `{"data":[]}`, errHas: "missing field /data/id"},
		{name: "id past the array", payload: &config.Payload{IDPointer: "/ids/1"}, body: `{"ids":["a"]}`, errHas: "missing field /ids/1"},
		{name: "id empty", payload: &config.Payload{IDPointer: "/id"}, body: `{"id":"  "}`, errHas: "/id must hold"},
		{name: "type header not UTF-8", payload: &config.Payload{IDPointer: "/id", TypeHeader: "X-Topic"}, hdr: http.Header{"X-Topic": {"\xff"}}, body: `{"id":"p"}`, errHas: "X-Topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := oneSource(t, config.Source{Name: "n", Namespace: "ns", Provider: "hmac", Secrets: []string{"s1"}, HMAC: cfgGitHubHMAC, Payload: tc.payload})
			hdr := tc.hdr
			if hdr == nil {
				hdr = http.Header{}
			}
			b, err := normalizeSigned(t, src, &Request{Header: hdr, Body: []byte(tc.body), Received: received})
			if tc.errHas != "" {
				if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want ErrInvalidPayload saying %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.EventID, want.Source, want.Provider, want.Namespace, want.ReceivedAt, want.Raw =
				bodyEventID("n", []byte(tc.body)), "n", "hmac", "ns", received, tc.body
			if got := b.Changes[0]; fmt.Sprintf("%+v", cfgChangeString(got)) != fmt.Sprintf("%+v", cfgChangeString(want)) {
				t.Fatalf("change\n got %+v\nwant %+v", cfgChangeString(got), cfgChangeString(want))
			}
		})
	}
}

func cfgStr(s string) *string { return &s }

// cfgChangeString prints a change with its typed fields' values, for comparing.
func cfgChangeString(c schemas.Change) string {
	var fs []string
	for _, f := range []*string{c.Fields.Title, c.Fields.Description, c.Fields.Brand, c.Fields.Price, c.Fields.SalePrice, c.Fields.Currency,
		c.Fields.URL, c.Fields.ImageURL, c.Fields.Availability, c.Fields.SKU, c.Fields.GTIN} {
		if f == nil {
			fs = append(fs, "-")
		} else {
			fs = append(fs, strconv.Quote(*f))
		}
	}
	c.Fields = schemas.Fields{}
	return fmt.Sprintf("%+v fields=%v", c, fs)
}

// A delivery is recognised only by a configured event id header; the event
// id is that header, else derived from the body.
func TestGenericHMACDeliveryID(t *testing.T) {
	withID := oneSource(t, config.Source{Name: "s", Provider: "hmac", Secrets: []string{"s1"}, HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload})
	withoutID := oneSource(t, config.Source{Name: "g", Provider: "hmac", Secrets: []string{"s1"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}})
	body := []byte(`{"id":"p"}`)
	di := func(src *Source, h http.Header) (string, bool) {
		id := identityOf(t, src, &Request{Header: h, Body: body})
		return id.ID, id.ID != ""
	}
	if id := identityOf(t, withID, &Request{Header: http.Header{"X-Shopify-Webhook-Id": {"w-1"}}, Body: body}); id != (Identity{ID: "w-1"}) {
		t.Fatalf("with the header: %+v, want the id, not covered by the signature", id)
	}
	if _, ok := di(withID, http.Header{}); ok {
		t.Fatal("without the header a delivery must not be identified")
	}
	if _, ok := di(withoutID, http.Header{"X-Shopify-Webhook-Id": {"w-1"}}); ok {
		t.Fatal("a source without event_id_header must not identify deliveries")
	}
	b, err := normalizeSigned(t, withoutID, &Request{Header: http.Header{}, Body: body})
	if err != nil || b.Changes[0].EventID != bodyEventID("g", body) {
		t.Fatalf("event id without a header: %v %+v", err, b)
	}
	long := http.Header{"X-Shopify-Webhook-Id": {strings.Repeat("w", maxIDLen+1)}}
	if _, err := normalizeSigned(t, withID, &Request{Header: long, Body: body}); !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("an overlong event id: %v, want ErrInvalidPayload", err)
	}
}

// Configuration errors name the exact field, at the source's index.
func TestGenericHMACConfigErrors(t *testing.T) {
	payload := &config.Payload{IDPointer: "/id"}
	for _, tc := range []struct {
		name  string
		src   config.Source
		field string
	}{
		{"no secrets", config.Source{HMAC: cfgGitHubHMAC, Payload: payload}, "sources[1].secrets"},
		{"no hmac", config.Source{Secrets: []string{"s"}, Payload: payload}, "sources[1].hmac"},
		{"no header", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{}, Payload: payload}, "sources[1].hmac.header"},
		{"bad header name", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X Sig"}, Payload: payload}, "sources[1].hmac.header"},
		{"unknown encoding", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Encoding: "base32"}, Payload: payload}, "sources[1].hmac.encoding"},
		{"template without body", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Signed: "{timestamp}", TimestampHeader: "X-T"}, Payload: payload}, "sources[1].hmac.signed"},
		{"template with body twice", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Signed: "{body}{body}"}, Payload: payload}, "sources[1].hmac.signed"},
		{"unknown placeholder", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Signed: "{ts}.{body}"}, Payload: payload}, "sources[1].hmac.signed"},
		{"timestamp without header", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Signed: "{timestamp}.{body}"}, Payload: payload}, "sources[1].hmac.timestamp_header"},
		{"timestamp header not signed", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", TimestampHeader: "X-T"}, Payload: payload}, "sources[1].hmac.timestamp_header"},
		{"negative tolerance", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Signed: "{timestamp}.{body}", TimestampHeader: "X-T", Tolerance: -time.Second}, Payload: payload}, "sources[1].hmac.tolerance"},
		{"tolerance without timestamp", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", Tolerance: time.Minute}, Payload: payload}, "sources[1].hmac.tolerance"},
		{"bad event id header", config.Source{Secrets: []string{"s"}, HMAC: &config.HMAC{Header: "X-Sig", EventIDHeader: "X:Id"}, Payload: payload}, "sources[1].hmac.event_id_header"},
		{"no payload", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC}, "sources[1].payload"},
		{"no id pointer", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{}}, "sources[1].payload.id_pointer"},
		{"id pointer without slash", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "id"}}, "sources[1].payload.id_pointer"},
		{"id pointer bad escape", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/a~2"}}, "sources[1].payload.id_pointer"},
		{"type pointer bad escape", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id", TypePointer: "/t~"}}, "sources[1].payload.type_pointer"},
		{"type pointer and header", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id", TypePointer: "/t", TypeHeader: "X-T"}}, "sources[1].payload.type_header"},
		{"empty delete type", config.Source{Secrets: []string{"s"}, HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id", DeleteTypes: []string{"d", ""}}}, "sources[1].payload.delete_types[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.Name, tc.src.Provider = "bad", "hmac"
			lisa := config.Source{Name: "l", Provider: "lisa", Secrets: []string{"s"}, APIKeys: []string{"k"}}
			_, err := NewSources([]config.Source{lisa, tc.src}, Deps{})
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}

// The examples of RFC 6901 section 5, and what does not exist or parse.
func TestJSONPointer(t *testing.T) {
	doc := []byte(`{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,"i\\j":5,"k\"l":6," ":7,"m~n":8,
		"nested":{"arr":[{"x":[10,11]}],"null":null,"dup":1,"dup":2,"~01":"tilde-zero-one","~1":"tilde-one"}}`)
	for _, tc := range []struct {
		ptr  string
		want string // compact JSON; "" when the target does not exist
	}{
		{"/foo", `["bar","baz"]`},
		{"/foo/0", `"bar"`},
		{"/foo/1", `"baz"`},
		{"/", `0`},
		{"/a~1b", `1`},
		{"/c%d", `2`},
		{"/e^f", `3`},
		{"/g|h", `4`},
		{`/i\j`, `5`},
		{`/k"l`, `6`},
		{"/ ", `7`},
		{"/m~0n", `8`},
		{"/nested/arr/0/x/1", `11`},
		{"/nested/null", `null`},
		{"/nested/dup", `2`},                 // the last duplicate, as everywhere in the package
		{"/nested/~001", `"tilde-zero-one"`}, // "~0" then "01": the member "~01"
		{"/nested/~01", `"tilde-one"`},       // "~0" then "1" is "~1", never "/"
		{"/foo/2", ""},                       // past the end
		{"/foo/-", ""},                       // the element after the last never exists
		{"/foo/01", ""},                      // leading zero
		{"/foo/+1", ""},
		{"/foo/-1", ""},
		{"/foo/ 1", ""},
		{"/foo/1e0", ""},
		{"/foo/99999999999999999999", ""},
		{"/foo/0/x", ""}, // a scalar on the way
		{"/nested/null/x", ""},
		{"/nope", ""},
		{"/Foo", ""}, // members match exactly, case included
		{"/foo/", ""},
		{"//", ""},
	} {
		t.Run(tc.ptr, func(t *testing.T) {
			p, err := parseJSONPointer(tc.ptr)
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tc.ptr {
				t.Fatalf("String() = %q, want %q", p.String(), tc.ptr)
			}
			raw, ok := p.lookup(doc)
			if tc.want == "" {
				if ok {
					t.Fatalf("found %s, want nothing", raw)
				}
				return
			}
			var got bytes.Buffer
			if !ok || json.Compact(&got, raw) != nil || got.String() != tc.want {
				t.Fatalf("lookup = %s (found %v), want %s", raw, ok, tc.want)
			}
		})
	}
	if raw, ok := (jsonPointer{}).lookup(doc); !ok || !bytes.Equal(raw, doc) {
		t.Fatal(`"" must refer to the whole document`)
	}
	for _, bad := range []string{"foo", "#/foo", "/~", "/~2", "/a~", "/a~b/c"} {
		if _, err := parseJSONPointer(bad); err == nil {
			t.Errorf("parseJSONPointer(%q) accepted", bad)
		}
	}
	if _, ok := (jsonPointer{"a"}).lookup([]byte(`{"a":`)); ok {
		t.Error("lookup in invalid JSON found something")
	}
}

// Every YAML example of docs/providers-configurable.md parses and starts,
// and its Shopify preset is the one these tests use.
func TestGenericHMACDocumentedConfigs(t *testing.T) {
	doc, err := os.ReadFile("../docs/providers-configurable.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) < 4 {
		t.Fatalf("found %d YAML examples, want 4", len(blocks))
	}
	for _, b := range blocks {
		yml, _, _ := strings.Cut(b, "```")
		cfg, err := config.Parse([]byte(yml), func(string) (string, bool) { return "secret", true })
		if err != nil {
			t.Fatalf("%v in\n%s", err, yml)
		}
		srcs, err := NewSources(cfg.Sources, Deps{})
		if err != nil {
			t.Fatalf("%v in\n%s", err, yml)
		}
		if s := srcs[0]; s.Name == "shopify-eu" {
			// The source the tested preset builds, for the same secrets.
			preset := oneSource(t, config.Source{Name: s.Name, Provider: "hmac", Namespace: s.Namespace, Secrets: s.Secrets,
				MaxJSONDepth: s.MaxJSONDepth, HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload})
			if !reflect.DeepEqual(s.Adapter, preset.Adapter) {
				t.Fatalf("documented Shopify preset %+v differs from the tested one %+v", s.Adapter, preset.Adapter)
			}
		}
	}
}
