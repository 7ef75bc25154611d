package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// datasemblySample is the request body of Datasembly's contract, compacted.
const datasemblySample = `{"listings":[{"timestamp":"2021-03-01T01:44:35Z","retailer":"Kroger","latitude":30.21008,"longitude":-95.52763,"barcode":"016000401068","sku":"57123","price":4.99,"salePrice":4.25,"imageLabelUrl":"https://example.com/image_label_1.jpg","imageBarcodeUrl":"https://example.com/image_barcode_1.jpg","imagePriceTagUrl":"https://example.com/image_price_tag_1.jpg"},{"timestamp":"2021-03-02T18:17:12Z","retailer":"Walmart","latitude":30.210446,"longitude":-95.461962,"barcode":"01600012479","sku":"685-781","price":2.99,"salePrice":null,"imageLabelUrl":"https://example.com/image_label_2.jpg","imageBarcodeUrl":"https://example.com/image_barcode_2.jpg","imagePriceTagUrl":"https://example.com/image_price_tag_2.jpg"}]}`

// datasemblySampleSig is the contract's pseudocode
// base64_encode(hmac_sha256(request_body_bytes, secret)) on datasemblySample
// with secret "ds-secret", computed with Python and cross-checked with Node:
//
//	printf '%s' "$BODY" | python3 -c 'import hmac,hashlib,base64,sys; print(base64.b64encode(hmac.new(b"ds-secret", sys.stdin.buffer.read(), hashlib.sha256).digest()).decode())'
//	printf '%s' "$BODY" | node -e 'const c=require("crypto");let d=[];process.stdin.on("data",x=>d.push(x)).on("end",()=>console.log(c.createHmac("sha256","ds-secret").update(Buffer.concat(d)).digest("base64")))'
//
// It contains a "/", so its URL-safe spelling differs.
const datasemblySampleSig = "TQT/qJwRX/pepenAUNor3tdZUwDxCcBYgN9oFydicUs="

// dsListing returns a valid listing as JSON with fields replaced by the
// given raw JSON values (key, value pairs), or dropped when a value is "".
func dsListing(kv ...string) string {
	fields := [][2]string{
		{"timestamp", `"2021-03-01T01:44:35Z"`}, {"retailer", `"Kroger"`},
		{"latitude", "30.21008"}, {"longitude", "-95.52763"},
		{"barcode", `"016000401068"`}, {"sku", `"57123"`},
		{"price", "4.99"}, {"salePrice", "4.25"}, {"imageLabelUrl", `"https://example.com/l.jpg"`},
	}
	for i := 0; i < len(kv); i += 2 {
		found := false
		for j := range fields {
			if fields[j][0] == kv[i] {
				fields[j][1], found = kv[i+1], true
			}
		}
		if !found {
			fields = append(fields, [2]string{kv[i], kv[i+1]})
		}
	}
	var parts []string
	for _, f := range fields {
		if f[1] != "" {
			parts = append(parts, fmt.Sprintf("%q:%s", f[0], f[1]))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// dsBody wraps listings in a delivery.
func dsBody(listings ...string) []byte {
	return []byte(`{"listings":[` + strings.Join(listings, ",") + `]}`)
}

// datasemblyValid is delivery n: a listing keyed by barcode and one keyed
// by sku. Its nonce is chosen so that the signature under "s1" contains
// "+" or "/", so the URL-safe tampering case really differs.
func datasemblyValid(n int) []byte {
	for nonce := 0; ; nonce++ {
		b := dsBody(
			dsListing("barcode", fmt.Sprintf(`"bc%d"`, n), "sku", ""),
			dsListing("barcode", "", "sku", fmt.Sprintf(`"sku-%d"`, n), "salePrice", "null", "nonce", fmt.Sprint(nonce)),
		)
		if strings.ContainsAny(base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s1"), b)), "+/") {
			return b
		}
	}
}

func datasemblySigner(secret string, body []byte) http.Header {
	return http.Header{
		"Content-Type": {"application/json"},
		"Ds-Signature": {base64.StdEncoding.EncodeToString(hmacSHA256([]byte(secret), body))},
	}
}

// datasemblyTampering are the malformed-signature cases of a base64 scheme.
func datasemblyTampering() []tamper {
	get := func(h http.Header) string { return h.Get(datasemblySignatureHeader) }
	set := func(h http.Header, v string) { h.Set(datasemblySignatureHeader, v) }
	mac := func(h http.Header) []byte { b, _ := base64.StdEncoding.DecodeString(get(h)); return b }
	return []tamper{
		{"bad base64", func(h http.Header) { set(h, strings.Repeat("!", 44)) }, http.StatusBadRequest},
		{"truncated", func(h http.Header) { set(h, get(h)[:40]) }, http.StatusBadRequest},
		{"padding removed", func(h http.Header) { set(h, strings.TrimRight(get(h), "=")) }, http.StatusBadRequest},
		{"wrong length (33 bytes)", func(h http.Header) { set(h, base64.StdEncoding.EncodeToString(append(mac(h), 0))) }, http.StatusBadRequest},
		{"wrong length (31 bytes)", func(h http.Header) { set(h, base64.StdEncoding.EncodeToString(mac(h)[:31])) }, http.StatusBadRequest},
		{"embedded space", func(h http.Header) { v := get(h); set(h, v[:20]+" "+v[20:]) }, http.StatusBadRequest},
		{"URL-safe alphabet", func(h http.Header) { set(h, base64.URLEncoding.EncodeToString(mac(h))) }, http.StatusBadRequest},
		{"stray bits before the padding", func(h http.Header) { set(h, datasemblyStrayBits(get(h))) }, http.StatusBadRequest},
		{"hex instead of base64", func(h http.Header) { set(h, hex.EncodeToString(mac(h))) }, http.StatusBadRequest},
		{"two signatures in one value", func(h http.Header) { set(h, get(h)+","+get(h)) }, http.StatusBadRequest},
	}
}

// datasemblyStrayBits sets the unused low bits of a padded 32-byte base64
// value: a lenient decoder reads the same bytes, a strict one refuses it.
func datasemblyStrayBits(v string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, v[42])
	return v[:42] + string(alphabet[i|1]) + v[43:]
}

func TestDatasemblyConformance(t *testing.T) {
	runConformance(t, conformance{
		source: config.Source{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds",
			Secrets: []string{"s1", "s0"}, DedupeWindow: 10 * time.Minute},
		path:    "/v2/ingest/productlistings/manual/acme",
		valid:   datasemblyValid,
		sign:    datasemblySigner,
		withID:  func(id string) []byte { return dsBody(dsListing("barcode", id, "sku", "")) },
		idField: "invalid field barcode (listings[0]):",
		wantKeys: func(n int) []string {
			return []string{fmt.Sprintf("ds:bc%d", n), fmt.Sprintf("ds:sku-%d", n)}
		},
		okStatus:      http.StatusOK,
		sigHeader:     datasemblySignatureHeader,
		badSignatures: datasemblyTampering(),
		invalidBodies: datasemblyInvalidBodies(),
		errorBody: func(t *testing.T, body map[string]any) {
			t.Helper()
			if body["success"] != false {
				t.Fatalf("refusal without success=false: %v", body)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("refusal without an error message: %v", body)
			}
		},
	}, Deps{})
}

// datasemblyInvalidBodies are signed bodies refused with the contract's
// wording, naming the listing.
func datasemblyInvalidBodies() []invalidBody {
	ok := dsListing()
	return []invalidBody{
		{name: "no listings", body: []byte(`{}`), errHas: "missing field listings"},
		{name: "listings null", body: []byte(`{"listings":null}`), errHas: "missing field listings"},
		{name: "listings empty", body: dsBody(), errHas: "invalid field listings: must be a non-empty array"},
		{name: "listings an object", body: []byte(`{"listings":` + ok + `}`), errHas: "invalid field listings: must be a non-empty array"},
		{name: "listing not an object", body: dsBody(ok, `"x"`), errHas: "invalid field listing (listings[1]): must be a JSON object"},
		{name: "listing null", body: dsBody(`null`), errHas: "invalid field listing (listings[0]): must be a JSON object"},
		{name: "missing timestamp", body: dsBody(dsListing("timestamp", "")), errHas: "missing field timestamp (listings[0])"},
		{name: "timestamp null", body: dsBody(dsListing("timestamp", "null")), errHas: "missing field timestamp (listings[0])"},
		{name: "timestamp not RFC 3339", body: dsBody(dsListing("timestamp", `"2021-03-01 01:44:35"`)), errHas: "invalid field timestamp (listings[0])"},
		{name: "timestamp without zone", body: dsBody(dsListing("timestamp", `"2021-03-01T01:44:35"`)), errHas: "invalid field timestamp (listings[0])"},
		{name: "timestamp a number", body: dsBody(dsListing("timestamp", "1614563075")), errHas: "invalid field timestamp (listings[0])"},
		{name: "missing retailer", body: dsBody(dsListing("retailer", "")), errHas: "missing field retailer (listings[0])"},
		{name: "blank retailer", body: dsBody(dsListing("retailer", `" "`)), errHas: "invalid field retailer (listings[0]): must be a non-empty string"},
		{name: "retailer a number", body: dsBody(dsListing("retailer", "7")), errHas: "invalid field retailer (listings[0])"},
		{name: "missing latitude", body: dsBody(dsListing("latitude", "")), errHas: "missing field latitude (listings[0])"},
		{name: "latitude above 90", body: dsBody(dsListing("latitude", "90.000001")), errHas: "invalid field latitude (listings[0]): out of range"},
		{name: "latitude below -90", body: dsBody(dsListing("latitude", "-91")), errHas: "invalid field latitude (listings[0]): out of range"},
		{name: "latitude quoted", body: dsBody(dsListing("latitude", `"30.2"`)), errHas: "invalid field latitude (listings[0]): must be a number"},
		{name: "missing longitude", body: dsBody(dsListing("longitude", "")), errHas: "missing field longitude (listings[0])"},
		{name: "longitude above 180", body: dsBody(dsListing("longitude", "180.5")), errHas: "invalid field longitude (listings[0]): out of range"},
		{name: "longitude below -180", body: dsBody(dsListing("longitude", "-1e3")), errHas: "invalid field longitude (listings[0]): out of range"},
		{name: "neither barcode nor sku", body: dsBody(dsListing("barcode", "", "sku", "")), errHas: "missing field barcode or sku (listings[0])"},
		{name: "barcode and sku blank", body: dsBody(dsListing("barcode", `""`, "sku", `"  "`)), errHas: "missing field barcode or sku (listings[0])"},
		{name: "barcode a number", body: dsBody(dsListing("barcode", "16000401068")), errHas: "invalid field barcode (listings[0]): must be a string"},
		{name: "barcode too long", body: dsBody(dsListing("barcode", `"`+strings.Repeat("1", maxIDLen+1)+`"`)), errHas: "invalid field barcode (listings[0])"},
		{name: "missing price", body: dsBody(dsListing("price", "")), errHas: "missing field price (listings[0])"},
		{name: "price null", body: dsBody(dsListing("price", "null")), errHas: "missing field price (listings[0])"},
		{name: "negative price", body: dsBody(dsListing("price", "-0.01")), errHas: "invalid field price (listings[0]): must not be negative"},
		{name: "price quoted", body: dsBody(dsListing("price", `"4.99"`)), errHas: "invalid field price (listings[0]): must be a number"},
		{name: "price beyond float64", body: dsBody(dsListing("price", "1e999")), errHas: "invalid field price (listings[0]): must be a number"},
		{name: "salePrice quoted", body: dsBody(dsListing("salePrice", `"4.25"`)), errHas: "invalid field salePrice (listings[0]): must be a number"},
		{name: "salePrice negative", body: dsBody(dsListing("salePrice", "-1")), errHas: "invalid field salePrice (listings[0])"},
		{name: "second listing bad", body: dsBody(ok, dsListing("timestamp", ""), ok), errHas: "missing field timestamp (listings[1])"},
		{name: "first bad field in contract order", body: dsBody(dsListing("retailer", "", "price", "")), errHas: "missing field retailer (listings[0])"},
		{name: "JSON array", body: []byte(`[` + ok + `]`), errHas: "not a JSON object"},
		{name: "invalid UTF-8", body: dsBody(dsListing("retailer", "\"\xff\"")), errHas: "UTF-8"},
		{name: "trailing data", body: append(dsBody(ok), []byte(`{}`)...), errHas: "trailing data"},
		// Regression: parseObject alone let a stray "}" after the object through.
		{name: "stray closing brace", body: append(dsBody(ok), '}'), errHas: "trailing data"},
	}
}

// The contract's sample, signed as its pseudocode says, is accepted and
// becomes one change per listing.
func TestDatasemblyContractVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "ds", Provider: "datasembly", Namespace: "ns", Secrets: []string{"ds-secret"}})
	body := []byte(datasemblySample)
	h := src.Adapter.(Signer).Sign(body)
	if got := h.Get("ds-signature"); got != datasemblySampleSig {
		t.Fatalf("signature %s, want %s", got, datasemblySampleSig)
	}
	if h.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", h.Get("Content-Type"))
	}
	if err := verifyErr(t.Context(), src, &Request{Header: http.Header{"Ds-Signature": {datasemblySampleSig}}, Body: body}); err != nil {
		t.Fatal(err)
	}
	b, err := normalizeSigned(t, src, &Request{Header: h, Body: body, Received: time.Unix(1, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Changes) != 2 || len(b.Events) != 0 {
		t.Fatalf("batch %+v", b)
	}
	first, second := b.Changes[0], b.Changes[1]
	eventID := bodyEventID("ds", body)
	for i, c := range []struct {
		got, want string
	}{
		{first.Key(), "ns:016000401068"}, {second.Key(), "ns:01600012479"},
		{first.EventID, eventID + "#0"}, {second.EventID, eventID + "#1"},
		{first.EventType, "listing.collected"}, {first.Resource, "product"}, {first.Provider, "datasembly"}, {first.Source, "ds"},
		{*first.Fields.Price, "4.99"}, {*first.Fields.SalePrice, "4.25"}, {*second.Fields.Price, "2.99"},
		{*first.Fields.GTIN, "016000401068"}, {*first.Fields.SKU, "57123"}, {*second.Fields.SKU, "685-781"},
		{*first.Fields.ImageURL, "https://example.com/image_label_1.jpg"},
		{first.OccurredAt.Format(time.RFC3339), "2021-03-01T01:44:35Z"}, {second.OccurredAt.Format(time.RFC3339), "2021-03-02T18:17:12Z"},
	} {
		if c.got != c.want {
			t.Errorf("check %d: got %q, want %q", i, c.got, c.want)
		}
	}
	if second.Fields.SalePrice != nil {
		t.Errorf("salePrice null became %q", *second.Fields.SalePrice)
	}
	// Raw is each listing's own bytes as sent, not re-serialized.
	if !strings.HasPrefix(datasemblySample, `{"listings":[`+first.Raw+`,`+second.Raw+`]}`) {
		t.Errorf("raw listings are not the sent bytes:\n%s\n%s", first.Raw, second.Raw)
	}
}

// Verify decodes only strict, padded standard base64 of exactly 32 bytes.
func TestDatasemblyVerify(t *testing.T) {
	src := oneSource(t, config.Source{Name: "ds", Provider: "datasembly", Secrets: []string{"ds-secret", "old"}})
	body := []byte(datasemblySample)
	old := base64.StdEncoding.EncodeToString(hmacSHA256([]byte("old"), body))
	mac, _ := base64.StdEncoding.DecodeString(datasemblySampleSig)
	for _, tc := range []struct {
		name   string
		header []string // nil: absent
		want   error
	}{
		{"contract vector", []string{datasemblySampleSig}, nil},
		{"rotated secret", []string{old}, nil},
		{"absent", nil, ErrMissingSignature},
		{"empty", []string{""}, ErrMissingSignature},
		{"wrong secret", []string{base64.StdEncoding.EncodeToString(hmacSHA256([]byte("nope"), body))}, ErrBadSignature},
		{"URL-safe alphabet", []string{base64.URLEncoding.EncodeToString(mac)}, ErrMalformedSignature},
		{"unpadded", []string{base64.RawStdEncoding.EncodeToString(mac)}, ErrMalformedSignature},
		{"embedded LF (the decoder would skip it)", []string{datasemblySampleSig[:10] + "\n" + datasemblySampleSig[10:]}, ErrMalformedSignature},
		{"embedded CR LF", []string{datasemblySampleSig[:10] + "\r\n" + datasemblySampleSig[10:]}, ErrMalformedSignature},
		{"trailing LF", []string{datasemblySampleSig + "\n"}, ErrMalformedSignature},
		{"stray bits before the padding", []string{datasemblyStrayBits(datasemblySampleSig)}, ErrMalformedSignature},
		{"SHA-1 length", []string{base64.StdEncoding.EncodeToString(mac[:20])}, ErrMalformedSignature},
		{"only the first header value counts", []string{"bad", datasemblySampleSig}, ErrMalformedSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != nil {
				h["Ds-Signature"] = tc.header
			}
			err := verifyErr(t.Context(), src, &Request{Header: h, Body: body})
			wantErrIs(t, err, tc.want)
			if err != nil && strings.Contains(err.Error(), datasemblySampleSig[:8]) {
				t.Fatalf("error leaks the signature: %v", err)
			}
		})
	}
}

// Accepted listings: bounds, trimmed keys, decimals exactly as sent.
func TestDatasemblyNormalize(t *testing.T) {
	src := oneSource(t, config.Source{Name: "ds", Provider: "datasembly", Namespace: "ns", Secrets: []string{"s"}})
	for _, tc := range []struct {
		name      string
		listing   string
		key       string
		price     string
		salePrice string // "" for nil
	}{
		{"barcode wins over sku", dsListing(), "ns:016000401068", "4.99", "4.25"},
		{"key is trimmed", dsListing("barcode", `" 0123 "`), "ns:0123", "4.99", "4.25"},
		{"latitude and longitude at their bounds", dsListing("latitude", "90", "longitude", "-180"), "ns:016000401068", "4.99", "4.25"},
		{"opposite bounds", dsListing("latitude", "-90", "longitude", "180"), "ns:016000401068", "4.99", "4.25"},
		{"price zero, salePrice absent", dsListing("price", "0", "salePrice", ""), "ns:016000401068", "0", ""},
		{"decimals kept exactly as sent", dsListing("price", "4.990", "salePrice", "1E2"), "ns:016000401068", "4.990", "1E2"},
		{"fractional-second timestamp with offset", dsListing("timestamp", `"2021-03-01T03:44:35.5+02:00"`), "ns:016000401068", "4.99", "4.25"},
		{"unknown fields ignored", dsListing("extra", `{"a":[1]}`), "ns:016000401068", "4.99", "4.25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := normalizeSigned(t, src, &Request{Body: dsBody(tc.listing)})
			if err != nil {
				t.Fatal(err)
			}
			c := b.Changes[0]
			if c.Key() != tc.key || *c.Fields.Price != tc.price || c.Raw != tc.listing {
				t.Fatalf("key %q price %q raw %q", c.Key(), *c.Fields.Price, c.Raw)
			}
			if got := c.Fields.SalePrice; tc.salePrice == "" && got != nil || tc.salePrice != "" && (got == nil || *got != tc.salePrice) {
				t.Fatalf("salePrice %v, want %q", got, tc.salePrice)
			}
			if c.OccurredAt.IsZero() || c.OccurredAt.Location() != time.UTC {
				t.Fatalf("occurredAt %v", c.OccurredAt)
			}
		})
	}
}

// A listing without a usable barcode is keyed by its sku, and a blank
// barcode is no GTIN (it must not overwrite a known one).
func TestDatasemblyKeyFallsBackToSKU(t *testing.T) {
	src := oneSource(t, config.Source{Name: "ds", Provider: "datasembly", Namespace: "ns", Secrets: []string{"s"}})
	for _, tc := range []struct {
		name, barcode, key, gtin string // gtin "" for nil
	}{
		{"barcode present", `"016000401068"`, "ns:016000401068", "016000401068"},
		{"barcode absent", "", "ns:57123", ""},
		{"barcode null", "null", "ns:57123", ""},
		{"barcode empty", `""`, "ns:57123", ""},
		{"barcode blank", `"  "`, "ns:57123", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := normalizeSigned(t, src, &Request{Body: dsBody(dsListing("barcode", tc.barcode))})
			if err != nil {
				t.Fatal(err)
			}
			c := b.Changes[0]
			if c.Key() != tc.key || c.Fields.SKU == nil || *c.Fields.SKU != "57123" {
				t.Fatalf("key %q sku %v", c.Key(), c.Fields.SKU)
			}
			if got := c.Fields.GTIN; tc.gtin == "" && got != nil || tc.gtin != "" && (got == nil || *got != tc.gtin) {
				t.Fatalf("gtin %v, want %q", got, tc.gtin)
			}
		})
	}
}

// One bad listing refuses the whole delivery: nothing of it is written.
func TestDatasemblyAllOrNothing(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds", Secrets: []string{"s1"}}}, Deps{}, 5*time.Second)
	bad := dsBody(dsListing("barcode", `"a"`), dsListing("barcode", `"b"`, "latitude", "123"), dsListing("barcode", `"c"`))
	status, raw := familyPost(t, f.url+"/v2/ingest/productlistings/manual/acme", bad, datasemblySigner("s1", bad))
	if want := `{"success":false,"error":"invalid field latitude (listings[1]): out of range"}`; status != http.StatusBadRequest || string(raw) != want {
		t.Fatalf("got %d %s, want 400 %s", status, raw, want)
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("a refused delivery wrote %d records", n)
	}
	good := dsBody(dsListing("barcode", `"a"`), dsListing("barcode", `"c"`))
	if status, raw := familyPost(t, f.url+"/v2/ingest/productlistings/manual/acme", good, datasemblySigner("s1", good)); status != http.StatusOK {
		t.Fatalf("valid delivery: %d %s", status, raw)
	}
	if n := len(f.records()); n != 2 {
		t.Fatalf("want 2 records after the valid delivery, got %d", n)
	}
}

// Answers have the contract's exact shape, on both routes, and a retried
// body is answered with its count without writing again.
func TestDatasemblyResponses(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds",
		Secrets: []string{"s1"}, MaxBodyBytes: 4096, DedupeWindow: time.Minute}}, Deps{}, 5*time.Second)
	const route = "/v2/ingest/productlistings/manual/acme"
	sample := []byte(datasemblySample)
	noTimestamp := dsBody(dsListing("timestamp", ""))
	big := dsBody(dsListing("retailer", `"`+strings.Repeat("x", 4096)+`"`))
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		header http.Header
		status int
		want   string // exact body, or a prefix when it ends in "*"
	}{
		{"success", route, sample, datasemblySigner("s1", sample), 200, `{"success":true,"count":2}`},
		{"retry answered with its count, not written", route, sample, datasemblySigner("s1", sample), 200, `{"success":true,"count":2}`},
		{"same source by name", "/webhooks/ds-main", dsBody(dsListing()), datasemblySigner("s1", dsBody(dsListing())), 200, `{"success":true,"count":1}`},
		{"contract's 400", route, noTimestamp, datasemblySigner("s1", noTimestamp), 400, `{"success":false,"error":"missing field timestamp (listings[0])"}`},
		{"missing signature", route, sample, http.Header{}, 400, `{"success":false,"error":"missing signature: ds-signature header is required"}`},
		{"malformed signature", route, sample, http.Header{"Ds-Signature": {"abc"}}, 400, `{"success":false,"error":"malformed signature: *`},
		{"wrong secret", route, sample, datasemblySigner("s0", sample), 401, `{"success":false,"error":"signature does not match: ds-signature"}`},
		{"too large", route, big, datasemblySigner("s1", big), 413, `{"success":false,"error":"request body too large: limit is 4096 bytes"}`},
		{"unknown client code is no Datasembly source", "/v2/ingest/productlistings/manual/nope", sample, datasemblySigner("s1", sample), 404, `{"error":"unknown source"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, raw := familyPost(t, f.url+tc.path, tc.body, tc.header)
			prefix, isPrefix := strings.CutSuffix(tc.want, "*")
			if status != tc.status || isPrefix && !bytes.HasPrefix(raw, []byte(prefix)) || !isPrefix && string(raw) != tc.want {
				t.Fatalf("got %d %s, want %d %s", status, raw, tc.status, tc.want)
			}
		})
	}
	if n := len(f.records()); n != 3 {
		t.Fatalf("want 3 records (2 + 1, the retry not written again), got %d", n)
	}
}

// Respond shapes every outcome, hiding internal errors.
func TestDatasemblyRespond(t *testing.T) {
	d := datasembly{}
	for _, tc := range []struct {
		name   string
		status int
		n      int
		err    error
		want   datasemblyReply
	}{
		{"success with zero", 200, 0, nil, datasemblyReply{Success: true, Count: new(0)}},
		{"payload error without the sentinel's prefix", 400, 0, fieldMissing("timestamp", " (listings[3])"), datasemblyReply{Error: "missing field timestamp (listings[3])"}},
		{"unavailable", 503, 0, fmt.Errorf("%w: produce: broker down", ErrUnavailable), datasemblyReply{Error: "temporarily unavailable: produce: broker down"}},
		{"internal error hidden", 500, 0, errors.New("encode change: secret detail"), datasemblyReply{Error: "internal error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := d.Respond(tc.status, tc.n, tc.err).(datasemblyReply)
			if got.Success != tc.want.Success || got.Error != tc.want.Error || (got.Count == nil) != (tc.want.Count == nil) ||
				got.Count != nil && *got.Count != *tc.want.Count {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
