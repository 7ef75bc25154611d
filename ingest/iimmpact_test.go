package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// iimmpactSample is the payload of IIMMPACT's contract, compacted.
const iimmpactSample = `{"type":"product.updated","resource":"products","id":"CELCOM10","timestamp":"2024-01-15T10:30:00.000Z","data":{"product_code":"CELCOM10","product_category_code":"MOBILE_PREPAID","name":"Celcom Prepaid","display_name":"Celcom Prepaid Reload","image_url":"https://dashboard.iimmpact.com/img/CELCOM10.png","processing_time":"instant","is_active":true}}`

// iimmpactSampleSig signs iimmpactSample with secret "iimmpact-secret",
// computed with Python, and accepted (with and without the prefix, while
// "sha1=" is refused) by the contract's own TypeScript verifier run in Node:
//
//	printf '%s' "$BODY" | python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(b"iimmpact-secret", sys.stdin.buffer.read(), hashlib.sha256).hexdigest())'
//	printf '%s' "$BODY" | node -e '<the contract verifyWebhookSignature without types>; read stdin as b; sig="sha256="+createHmac("sha256","iimmpact-secret").update(b).digest("hex"); console.log(sig, verify(b,sig,s), verify(b,sig.slice(7),s), verify(b,"sha1="+sig.slice(7),s))'
//	-> sha256=32d4...94b7 true true false
const iimmpactSampleSig = "sha256=32d4288a6fb8a14798686f51284fe6a0d8bec8f67bff2e59015d3c2623ac94b7"

// iimmpactEvent returns an event body; data is raw JSON ("" leaves it out).
func iimmpactEvent(typ, resource, id, data string) []byte {
	b := fmt.Sprintf(`{"type":%q,"resource":%q,"id":%s,"timestamp":"2024-01-15T10:30:00.000Z"`, typ, resource, id)
	if data != "" {
		b += `,"data":` + data
	}
	return []byte(b + "}")
}

// iimmpactValid is delivery n, cycling through the resource kinds and
// actions, deletes included.
func iimmpactValid(n int) []byte {
	id := fmt.Sprintf(`"R%d"`, n)
	switch n % 4 {
	case 0:
		return iimmpactEvent("product.updated", "products", id, `{"name":"P","is_active":true}`)
	case 1:
		return iimmpactEvent("option.created", "options", id, `{"amount":10}`)
	case 2:
		return iimmpactEvent("category.deleted", "categories", id, "null")
	default:
		return iimmpactEvent("group.updated", "groups", id, `{}`)
	}
}

func TestIIMMPACTConformance(t *testing.T) {
	runConformance(t, conformance{
		source: config.Source{Name: "iim", Provider: "iimmpact", Namespace: "iim",
			Secrets: []string{"s1", "s0"}, DedupeWindow: 10 * time.Minute},
		path:      "/webhooks/iim",
		valid:     iimmpactValid,
		sign:      hexSigner(iimmpactSignatureHeader, "sha256=", nil),
		withID:    func(id string) []byte { return iimmpactEvent("product.updated", "products", id, `{"name":"P"}`) },
		idField:   "invalid field id:",
		wantKeys:  func(n int) []string { return []string{fmt.Sprintf("iim:R%d", n)} },
		sigHeader: iimmpactSignatureHeader,
		badSignatures: append(hexTampering(iimmpactSignatureHeader, "sha256="),
			tamper{"bare hex accepted", func(h http.Header) {
				h.Set(iimmpactSignatureHeader, strings.TrimPrefix(h.Get(iimmpactSignatureHeader), "sha256="))
			}, 0},
			tamper{"uppercase prefix", func(h http.Header) {
				h.Set(iimmpactSignatureHeader, "SHA256="+strings.TrimPrefix(h.Get(iimmpactSignatureHeader), "sha256="))
			}, http.StatusBadRequest},
			tamper{"sha512 prefix", func(h http.Header) {
				h.Set(iimmpactSignatureHeader, "sha512="+strings.TrimPrefix(h.Get(iimmpactSignatureHeader), "sha256="))
			}, http.StatusBadRequest},
			tamper{"prefix twice", func(h http.Header) { h.Set(iimmpactSignatureHeader, "sha256="+h.Get(iimmpactSignatureHeader)) }, http.StatusBadRequest},
		),
		invalidBodies: iimmpactInvalidBodies(),
	}, Deps{})
}

// iimmpactInvalidBodies are signed events refused with 400 naming the field.
func iimmpactInvalidBodies() []invalidBody {
	data := `{"name":"x"}`
	return []invalidBody{
		{name: "missing type", body: []byte(`{"resource":"products","id":"a","timestamp":"2024-01-15T10:30:00Z","data":{}}`), errHas: "missing field type"},
		{name: "unknown kind", body: iimmpactEvent("bundle.updated", "bundles", `"a"`, data), errHas: "invalid field type"},
		{name: "unknown action", body: iimmpactEvent("product.archived", "products", `"a"`, data), errHas: "invalid field type"},
		{name: "type without action", body: iimmpactEvent("product", "products", `"a"`, data), errHas: "invalid field type"},
		{name: "type with a third part", body: iimmpactEvent("product.updated.x", "products", `"a"`, data), errHas: "invalid field type"},
		{name: "type and resource disagree", body: iimmpactEvent("product.updated", "options", `"a"`, data), errHas: "invalid field resource: type product.updated needs resource products"},
		{name: "resource singular", body: iimmpactEvent("category.created", "category", `"a"`, data), errHas: "needs resource categories"},
		{name: "missing resource", body: []byte(`{"type":"product.updated","id":"a","timestamp":"2024-01-15T10:30:00Z","data":{}}`), errHas: "missing field resource"},
		{name: "missing id", body: []byte(`{"type":"product.updated","resource":"products","timestamp":"2024-01-15T10:30:00Z","data":{}}`), errHas: "missing field id"},
		{name: "empty id", body: iimmpactEvent("product.updated", "products", `""`, data), errHas: "invalid field id"},
		{name: "numeric id", body: iimmpactEvent("product.updated", "products", `10`, data), errHas: "invalid field id"},
		{name: "id too long", body: iimmpactEvent("product.updated", "products", `"`+strings.Repeat("x", maxIDLen+1)+`"`, data), errHas: "invalid field id"},
		{name: "missing timestamp", body: []byte(`{"type":"product.updated","resource":"products","id":"a","data":{}}`), errHas: "missing field timestamp"},
		{name: "timestamp without zone", body: []byte(`{"type":"product.updated","resource":"products","id":"a","timestamp":"2024-01-15T10:30:00","data":{}}`), errHas: "invalid field timestamp"},
		{name: "data null on update", body: iimmpactEvent("product.updated", "products", `"a"`, "null"), errHas: "invalid field data: must be an object for product.updated"},
		{name: "data missing on create", body: iimmpactEvent("option.created", "options", `"a"`, ""), errHas: "missing field data"},
		{name: "data an array", body: iimmpactEvent("group.created", "groups", `"a"`, `[]`), errHas: "invalid field data"},
		{name: "data on delete", body: iimmpactEvent("product.deleted", "products", `"a"`, data), errHas: "invalid field data: must be null for product.deleted"},
		{name: "empty object on delete", body: iimmpactEvent("group.deleted", "groups", `"a"`, `{}`), errHas: "must be null for group.deleted"},
		{name: "JSON array", body: []byte(`[` + iimmpactSample + `]`), errHas: "not a JSON object"},
		// Regression: parseObject alone let a stray "]" after the object through.
		{name: "stray closing bracket", body: []byte(iimmpactSample + `]`), errHas: "trailing data"},
	}
}

// The contract's sample signed as its TypeScript verifier checks it, with
// and without the prefix; the product's fields are mapped.
func TestIIMMPACTContractVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "iim", Provider: "iimmpact", Namespace: "ns", Secrets: []string{"iimmpact-secret"}})
	body := []byte(iimmpactSample)
	h := src.Adapter.(Signer).Sign(body)
	if got := h.Get("X-Webhook-Signature"); got != iimmpactSampleSig || h.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v, want signature %s", h, iimmpactSampleSig)
	}
	for _, sig := range []string{iimmpactSampleSig, strings.TrimPrefix(iimmpactSampleSig, "sha256=")} {
		if err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Webhook-Signature": {sig}}, Body: body}); err != nil {
			t.Fatalf("%s: %v", sig, err)
		}
	}
	b, err := normalizeSigned(t, src, &Request{Body: body})
	if err != nil {
		t.Fatal(err)
	}
	c := b.Changes[0]
	if c.Key() != "ns:CELCOM10" || c.Resource != "product" || c.EventType != "product.updated" || c.Deleted ||
		*c.Fields.Title != "Celcom Prepaid Reload" || *c.Fields.SKU != "CELCOM10" || *c.Fields.Availability != "active" ||
		*c.Fields.ImageURL != "https://dashboard.iimmpact.com/img/CELCOM10.png" || c.Raw != iimmpactSample ||
		!c.OccurredAt.Equal(time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)) || c.EventID != bodyEventID("iim", body) {
		t.Fatalf("change %+v", c)
	}
}

// Every header form: the prefix is optional, but no other prefix is.
func TestIIMMPACTVerify(t *testing.T) {
	src := oneSource(t, config.Source{Name: "iim", Provider: "iimmpact", Secrets: []string{"iimmpact-secret"}})
	body := []byte(iimmpactSample)
	hexSig := strings.TrimPrefix(iimmpactSampleSig, "sha256=")
	for _, tc := range []struct {
		name, header string
		want         error
	}{
		{"prefixed", iimmpactSampleSig, nil},
		{"bare hex", hexSig, nil},
		{"uppercase hex", "sha256=" + strings.ToUpper(hexSig), nil},
		{"empty", "", ErrMissingSignature},
		{"prefix only", "sha256=", ErrMalformedSignature},
		{"sha1 prefix", "sha1=" + hexSig, ErrMalformedSignature},
		{"uppercase prefix", "SHA256=" + hexSig, ErrMalformedSignature},
		{"truncated", iimmpactSampleSig[:70], ErrMalformedSignature},
		{"line break", iimmpactSampleSig + "\n", ErrMalformedSignature},
		{"wrong secret", "sha256=" + fmt.Sprintf("%x", hmacSHA256([]byte("x"), body)), ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Webhook-Signature": {tc.header}}, Body: body})
			wantErrIs(t, err, tc.want)
		})
	}
}

// Each resource kind and action becomes one change of that kind, deletes
// marked Deleted, and only products carry typed fields.
func TestIIMMPACTNormalize(t *testing.T) {
	src := oneSource(t, config.Source{Name: "iim", Provider: "iimmpact", Namespace: "ns", Secrets: []string{"s"}})
	for _, tc := range []struct {
		name     string
		body     []byte
		resource string
		deleted  bool
		title    string // "" when no typed fields
		active   string
	}{
		{"product created", iimmpactEvent("product.created", "products", `"P1"`, `{"name":"Plain","is_active":false}`), "product", false, "Plain", "inactive"},
		{"display_name wins over name", iimmpactEvent("product.updated", "products", `"P1"`, `{"name":"Plain","display_name":"Shown"}`), "product", false, "Shown", ""},
		{"is_active not a boolean is left out", iimmpactEvent("product.updated", "products", `"P1"`, `{"name":"N","is_active":"yes"}`), "product", false, "N", ""},
		{"is_active null is left out", iimmpactEvent("product.updated", "products", `"P1"`, `{"name":"N","is_active":null}`), "product", false, "N", ""},
		{"product deleted with data null", iimmpactEvent("product.deleted", "products", `"P1"`, "null"), "product", true, "", ""},
		{"product deleted without data", iimmpactEvent("product.deleted", "products", `"P1"`, ""), "product", true, "", ""},
		{"option updated", iimmpactEvent("option.updated", "options", `"P1"`, `{"name":"opt"}`), "option", false, "", ""},
		{"option deleted", iimmpactEvent("option.deleted", "options", `"P1"`, "null"), "option", true, "", ""},
		{"category created", iimmpactEvent("category.created", "categories", `"P1"`, `{"name":"cat"}`), "category", false, "", ""},
		{"category deleted", iimmpactEvent("category.deleted", "categories", `"P1"`, "null"), "category", true, "", ""},
		{"group created", iimmpactEvent("group.created", "groups", `"P1"`, `{"name":"grp"}`), "group", false, "", ""},
		{"group deleted", iimmpactEvent("group.deleted", "groups", `"P1"`, "null"), "group", true, "", ""},
		{"id trimmed", iimmpactEvent("group.deleted", "groups", `" P1 "`, "null"), "group", true, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := normalizeSigned(t, src, &Request{Body: tc.body})
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Changes) != 1 || len(b.Events) != 0 {
				t.Fatalf("batch %+v", b)
			}
			c := b.Changes[0]
			typ := strings.Split(string(tc.body), `"`)[3]
			if c.Key() != "ns:P1" || c.ProductID != "P1" || c.Resource != tc.resource || c.Deleted != tc.deleted ||
				c.EventType != typ || c.Raw != string(tc.body) || c.Provider != "iimmpact" {
				t.Fatalf("change %+v", c)
			}
			if got := c.Fields.Title; tc.title == "" && got != nil || tc.title != "" && (got == nil || *got != tc.title) {
				t.Fatalf("title %v, want %q", got, tc.title)
			}
			if got := c.Fields.Availability; tc.active == "" && got != nil || tc.active != "" && (got == nil || *got != tc.active) {
				t.Fatalf("availability %v, want %q", got, tc.active)
			}
		})
	}
}

// A delete travels to Kafka as a Deleted change keyed by id; a mismatched
// resource writes nothing.
func TestIIMMPACTDeleteReachesKafka(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "iim", Provider: "iimmpact", Namespace: "ns", Secrets: []string{"s1"}}}, Deps{}, 5*time.Second)
	sign := hexSigner(iimmpactSignatureHeader, "sha256=", nil)
	mismatch := iimmpactEvent("product.deleted", "groups", `"CELCOM10"`, "null")
	if status, raw := familyPost(t, f.url+"/webhooks/iim", mismatch, sign("s1", mismatch)); status != http.StatusBadRequest || !strings.Contains(string(raw), "needs resource products") {
		t.Fatalf("mismatch: %d %s", status, raw)
	}
	del := iimmpactEvent("product.deleted", "products", `"CELCOM10"`, "null")
	if status, raw := familyPost(t, f.url+"/webhooks/iim", del, sign("s1", del)); status != http.StatusAccepted {
		t.Fatalf("delete: %d %s", status, raw)
	}
	recs := f.records()
	if len(recs) != 1 || string(recs[0].Key) != "ns:CELCOM10" {
		t.Fatalf("records %v", recs)
	}
	c, err := f.serde.DecodeChange(t.Context(), recs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Deleted || c.EventType != "product.deleted" || c.Resource != "product" || c.Raw != string(del) {
		t.Fatalf("change %+v", c)
	}
}
