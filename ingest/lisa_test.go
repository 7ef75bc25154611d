package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
)

func TestLiSAConformance(t *testing.T) {
	runConformance(t, conformance{
		source: config.Source{Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop-eu",
			Secrets: []string{"s1", "s0"}, APIKeys: []string{"k1"}},
		path:      "/plugin-notifications/plugin-42/updates",
		valid:     func(n int) []byte { return []byte(fmt.Sprintf(`{"productId":"p%d","price":19.99}`, n)) },
		sign:      hexSigner("X-Hmac-Signature", "", http.Header{"Authorization": {"ApiKey k1"}}),
		withID:    func(id string) []byte { return []byte(`{"productId":` + id + `}`) },
		idField:   "field productId",
		resend:    resendRepeat,
		wantKeys:  func(n int) []string { return []string{fmt.Sprintf("shop-eu:p%d", n)} },
		sigHeader: "X-Hmac-Signature",
		badSignatures: append(hexTampering("X-Hmac-Signature", ""),
			tamper{"wrong API key", func(h http.Header) { h.Set("Authorization", "ApiKey nope") }, http.StatusUnauthorized},
			tamper{"missing API key", func(h http.Header) { h.Del("Authorization") }, http.StatusUnauthorized},
		),
		invalidBodies: []invalidBody{
			{name: "missing productId", body: []byte(`{"price":1}`), errHas: "missing field productId"},
			{name: "JSON array", body: []byte(`[{"productId":"1"}]`), errHas: "not a JSON object"},
			{name: "invalid UTF-8", body: []byte("{\"productId\":\"\xff\"}"), errHas: "UTF-8"},
			{name: "id too long", body: []byte(`{"productId":"` + strings.Repeat("x", maxIDLen+1) + `"}`), errHas: "productId"},
		},
	}, Deps{})
}

// The sample in LiSA's documentation, computed with Python's hmac module:
// python3 -c "import hmac,hashlib,json; p=json.dumps({'productId':'123','price':19.99}); print(hmac.new(b'your-secret-key', p.encode(), hashlib.sha256).hexdigest())"
func TestLiSADocumentationVector(t *testing.T) {
	body := []byte(`{"productId": "123", "price": 19.99}`) // json.dumps' separators
	const want = "303bb4635ef19e90801071d8ad7f335201dfb06a5074406cf1cb5eb248c3f8df"
	src := oneSource(t, config.Source{Name: "l", Provider: "lisa", Secrets: []string{"your-secret-key"}, APIKeys: []string{"your-api-key"}})
	h := src.Adapter.(Signer).Sign(body)
	if got := h.Get("X-Hmac-Signature"); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	if err := verifyErr(t.Context(), src, &Request{Header: http.Header{
		"Authorization": {"ApiKey your-api-key"}, "X-Hmac-Signature": {want}}, Body: body}); err != nil {
		t.Fatal(err)
	}
}

// A stray closing brace or bracket after the object is refused (found by
// FuzzAICommerceNormalize in the shared parser).
func TestParseObjectRefusesStrayClosers(t *testing.T) {
	for _, body := range []string{`{"productId":"1"}}`, `{"productId":"1"}]`, `{"productId":"1"} {}`} {
		if _, err := parseObject([]byte(body), jsondepth.Default); err == nil {
			t.Errorf("%s accepted", body)
		}
	}
	if _, err := parseObject([]byte(" {\"productId\":\"1\"}\n"), jsondepth.Default); err != nil {
		t.Errorf("surrounding whitespace refused: %v", err)
	}
}
