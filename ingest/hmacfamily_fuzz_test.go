package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
)

// Fuzz targets and test helpers of the HMAC-family providers (Datasembly,
// IIMMPACT, AICommerce). Run one with, for example:
//
//	go test -run XXX -fuzz FuzzDatasemblyVerify -fuzztime 10s ./ingest/

// familyPost posts body with h to url and returns the status and the exact
// response body.
func familyPost(t *testing.T, url string, body []byte, h http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, bytes.TrimSpace(raw)
}

// fuzzSecrets are the rotated secrets every verify target checks against.
var fuzzSecrets = []string{"s1", "s0"}

// checkVerifyOutcome asserts what any verifier may answer: acceptance only
// when accepted(mac) holds for the true MAC of body under some secret, and
// otherwise one of the three signature errors.
func checkVerifyOutcome(t *testing.T, err error, body []byte, accepted func(mac []byte) bool) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrMissingSignature) && !errors.Is(err, ErrMalformedSignature) && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		return
	}
	for _, s := range fuzzSecrets {
		if accepted(hmacSHA256([]byte(s), body)) {
			return
		}
	}
	t.Fatal("accepted a signature that no secret produces")
}

// checkBatch asserts what any successful Normalize returns: records, each
// with a key free of control characters, an event id and raw JSON that is
// valid UTF-8.
func checkBatch(t *testing.T, b Batch, err error) {
	t.Helper()
	if err != nil {
		if b.Len() != 0 {
			t.Fatalf("both an error and %d records: %v", b.Len(), err)
		}
		if !errors.Is(err, ErrInvalidPayload) {
			t.Fatalf("refusal is not ErrInvalidPayload: %v", err)
		}
		return
	}
	if b.Len() == 0 {
		t.Fatal("accepted with no records")
	}
	for _, c := range b.Changes {
		if c.ProductID == "" || c.ProductID != strings.TrimSpace(c.ProductID) || len(c.ProductID) > maxIDLen || c.Key() == "ns:" ||
			strings.ContainsFunc(c.ProductID, unicode.IsControl) {
			t.Fatalf("bad product id %q", c.ProductID)
		}
		if c.EventID == "" || c.Resource == "" || c.EventType == "" || !utf8.ValidString(c.Raw) || !json.Valid([]byte(c.Raw)) {
			t.Fatalf("bad change %+v", c)
		}
	}
	for _, e := range b.Events {
		if e.Subject == "" || len(e.Subject) > maxIDLen || strings.ContainsFunc(e.Subject, unicode.IsControl) || e.EventID == "" || e.EventType == "" || !utf8.ValidString(e.Raw) || !json.Valid([]byte(e.Raw)) {
			t.Fatalf("bad event %+v", e)
		}
	}
}

func fuzzSource(t testing.TB, provider string) *Source {
	return oneSource(t, config.Source{Name: "fz", Provider: provider, Namespace: "ns", Secrets: fuzzSecrets})
}

func FuzzDatasemblyVerify(f *testing.F) {
	src := fuzzSource(f, "datasembly")
	body := []byte(datasemblySample)
	good := base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s1"), body))
	for _, h := range []string{good, base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s0"), body)), "", "abc", good + "\n",
		strings.TrimRight(good, "="), base64.URLEncoding.EncodeToString(hmacSHA256([]byte("s1"), body)), good[:20] + " " + good[20:]} {
		f.Add(h, body)
	}
	f.Add(good, []byte(`{}`))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := verifyErr(t.Context(), src, &Request{Header: http.Header{"Ds-Signature": {header}}, Body: body})
		checkVerifyOutcome(t, err, body, func(mac []byte) bool {
			return header == base64.StdEncoding.EncodeToString(mac)
		})
	})
}

func FuzzDatasemblyNormalize(f *testing.F) {
	src := fuzzSource(f, "datasembly")
	f.Add([]byte(datasemblySample))
	for _, b := range datasemblyInvalidBodies() {
		f.Add(b.body)
	}
	f.Add(dsBody(dsListing("barcode", "", "sku", `"\u00e9\ud800"`)))
	f.Add([]byte(`{"listings":[{"timestamp":"2021-03-01T01:44:35Z","retailer":"r","latitude":-0,"longitude":1e2,"sku":"s","price":0e0}],"pad":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := normalizeSigned(t, src, &Request{Body: body, Received: time.Unix(0, 0).UTC()})
		checkBatch(t, b, err)
		if err != nil {
			return
		}
		// Every listing is one change, whose raw bytes occur in the body.
		for i, c := range b.Changes {
			if !bytes.Contains(body, []byte(c.Raw)) || c.Fields.Price == nil || c.OccurredAt.IsZero() {
				t.Fatalf("change %d: %+v", i, c)
			}
		}
	})
}

func FuzzIIMMPACTVerify(f *testing.F) {
	src := fuzzSource(f, "iimmpact")
	body := []byte(iimmpactSample)
	good := hex.EncodeToString(hmacSHA256([]byte("s1"), body))
	for _, h := range []string{"sha256=" + good, good, strings.ToUpper(good), "sha256=", "sha1=" + good, "SHA256=" + good, "", "sha256=" + good[:63]} {
		f.Add(h, body)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Webhook-Signature": {header}}, Body: body})
		checkVerifyOutcome(t, err, body, func(mac []byte) bool {
			want := hex.EncodeToString(mac)
			return strings.EqualFold(header, want) || strings.HasPrefix(header, "sha256=") && strings.EqualFold(header[len("sha256="):], want)
		})
	})
}

func FuzzIIMMPACTNormalize(f *testing.F) {
	src := fuzzSource(f, "iimmpact")
	f.Add([]byte(iimmpactSample))
	for _, b := range iimmpactInvalidBodies() {
		f.Add(b.body)
	}
	f.Add([]byte(`{"type":"group.deleted","resource":"groups","id":"g","timestamp":"2024-01-15T10:30:00Z","data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := normalizeSigned(t, src, &Request{Body: body})
		checkBatch(t, b, err)
		if err != nil {
			return
		}
		c := b.Changes[0]
		if len(b.Changes) != 1 || len(b.Events) != 0 || c.Raw != string(body) ||
			c.Deleted != strings.HasSuffix(c.EventType, ".deleted") || !strings.HasPrefix(c.EventType, c.Resource+".") {
			t.Fatalf("batch %+v", b)
		}
	})
}

func FuzzAICommerceVerify(f *testing.F) {
	src := fuzzSource(f, "aicommerce")
	body := []byte(aicommerceSample)
	good := hex.EncodeToString(hmacSHA256([]byte("s1"), body))
	for _, h := range []string{"sha256=" + good, good, "sha256=" + strings.ToUpper(good), "sha256=", "sha1=" + good, "", "sha256=" + good + "\n"} {
		f.Add(h, body)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Webhook-Signature": {header}}, Body: body})
		checkVerifyOutcome(t, err, body, func(mac []byte) bool {
			digest, ok := strings.CutPrefix(header, "sha256=")
			return ok && strings.EqualFold(digest, hex.EncodeToString(mac))
		})
	})
}

func FuzzAICommerceNormalize(f *testing.F) {
	src := fuzzSource(f, "aicommerce")
	f.Add([]byte(aicommerceSample))
	for _, b := range aicommerceInvalidBodies() {
		f.Add(b.body)
	}
	for n := range 4 {
		f.Add(aicommerceValid(n))
	}
	// The input that found the stray-brace bug (raw written as invalid JSON).
	f.Add([]byte(`{"event":"0","timestamp":"0000-01-01T0:00:00Z","data":{}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := normalizeSigned(t, src, &Request{Body: body})
		checkBatch(t, b, err)
		if err != nil {
			return
		}
		if b.Len() != 1 {
			t.Fatalf("want one record, got %+v", b)
		}
		if len(b.Changes) == 1 && (b.Changes[0].Raw != string(body) || b.Changes[0].EventType != "product.added" && b.Changes[0].EventType != "product.updated") {
			t.Fatalf("change %+v", b.Changes[0])
		}
		if len(b.Events) == 1 && b.Events[0].Raw != string(body) {
			t.Fatalf("event %+v", b.Events[0])
		}
	})
}
