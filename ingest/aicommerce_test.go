package ingest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// aicommerceSample is the payload of AICommerce's contract, compacted; its
// "signature" field is part of the signed body and authenticates nothing.
const aicommerceSample = `{"event":"chat.message.received","timestamp":"2024-01-15T10:30:00Z","signature":"sha256=abc123...","data":{"sessionId":"sess_abc123","storeId":"store_xyz","message":"Looking for running shoes","products":[{"id":"prod_xyz","name":"Nike Air Max","relevanceScore":0.95}]}}`

// aicommerceSampleSig signs aicommerceSample with the contract's secret
// "your-webhook-secret", computed with Python and accepted by the
// contract's own verifyWebhookSignature run in Node:
//
//	printf '%s' "$BODY" | python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(b"your-webhook-secret", sys.stdin.buffer.read(), hashlib.sha256).hexdigest())'
//	printf '%s' "$BODY" | node -e '<the contract verifyWebhookSignature without types>; read stdin as b; sig="sha256="+createHmac("sha256","your-webhook-secret").update(b).digest("hex"); console.log(sig, verify(b,sig,secret))'
//	-> sha256=09fb...be3e true
const aicommerceSampleSig = "sha256=09fb8efec9f94c10ebdb287d6fbb2ad4b06515c1033ad4c30f0ec3ec71cbbe3e"

// aicommerceBody returns a delivery of event with raw JSON data ("" leaves
// it out).
func aicommerceBody(event, data string) []byte {
	b := fmt.Sprintf(`{"event":%q,"timestamp":"2024-01-15T10:30:00Z"`, event)
	if data != "" {
		b += `,"data":` + data
	}
	return []byte(b + "}")
}

// aicommerceValid is delivery n: catalog changes and analytics events in
// turn, so the suite sees both topics.
func aicommerceValid(n int) []byte {
	switch n % 4 {
	case 0:
		return aicommerceBody("product.added", fmt.Sprintf(`{"productId":"p%d","name":"Shoe","price":59.90,"currency":"EUR"}`, n))
	case 1:
		return aicommerceBody("chat.message.received", fmt.Sprintf(`{"sessionId":"s%d","storeId":"store","message":"hi"}`, n))
	case 2:
		return aicommerceBody("product.updated", fmt.Sprintf(`{"product":{"id":"p%d","name":"Shoe"}}`, n))
	default:
		return aicommerceBody("product.viewed", fmt.Sprintf(`{"productId":"p%d","sessionId":"x"}`, n))
	}
}

func TestAICommerceConformance(t *testing.T) {
	runConformance(t, conformance{
		source: config.Source{Name: "aic", Provider: "aicommerce", Namespace: "aic",
			Secrets: []string{"s1", "s0"}, DedupeWindow: 10 * time.Minute},
		path:    "/webhooks/aic",
		valid:   aicommerceValid,
		sign:    hexSigner(aicommerceSignatureHeader, "sha256=", nil),
		withID:  func(id string) []byte { return aicommerceBody("product.added", `{"productId":`+id+`}`) },
		idField: "invalid field data.productId:",
		wantKeys: func(n int) []string {
			if n%4 == 1 {
				return []string{fmt.Sprintf("aic:s%d", n)}
			}
			return []string{fmt.Sprintf("aic:p%d", n)}
		},
		sigHeader: aicommerceSignatureHeader,
		badSignatures: append(hexTampering(aicommerceSignatureHeader, "sha256="),
			tamper{"bare hex refused", func(h http.Header) {
				h.Set(aicommerceSignatureHeader, strings.TrimPrefix(h.Get(aicommerceSignatureHeader), "sha256="))
			}, http.StatusBadRequest},
			tamper{"uppercase prefix", func(h http.Header) {
				h.Set(aicommerceSignatureHeader, "SHA256="+strings.TrimPrefix(h.Get(aicommerceSignatureHeader), "sha256="))
			}, http.StatusBadRequest},
		),
		invalidBodies: aicommerceInvalidBodies(),
	}, Deps{})
}

// aicommerceInvalidBodies are signed deliveries refused with 400 naming
// the field.
func aicommerceInvalidBodies() []invalidBody {
	return []invalidBody{
		{name: "missing event", body: []byte(`{"timestamp":"2024-01-15T10:30:00Z","data":{}}`), errHas: "missing field event"},
		{name: "event not a string", body: []byte(`{"event":1,"timestamp":"2024-01-15T10:30:00Z","data":{}}`), errHas: "invalid field event"},
		{name: "event too long", body: aicommerceBody(strings.Repeat("e", maxIDLen+1), `{}`), errHas: "invalid field event"},
		{name: "missing timestamp", body: []byte(`{"event":"analytics.daily","data":{"storeId":"s"}}`), errHas: "missing field timestamp"},
		{name: "timestamp unix seconds", body: []byte(`{"event":"analytics.daily","timestamp":1705314600,"data":{"storeId":"s"}}`), errHas: "invalid field timestamp"},
		{name: "missing data", body: aicommerceBody("analytics.daily", ""), errHas: "missing field data"},
		{name: "data null", body: aicommerceBody("analytics.daily", "null"), errHas: "missing field data"},
		{name: "data an array", body: aicommerceBody("analytics.daily", "[]"), errHas: "invalid field data: must be an object"},
		{name: "product.added without id", body: aicommerceBody("product.added", `{"name":"Shoe"}`), errHas: "missing field data.productId"},
		{name: "product.updated with empty productId", body: aicommerceBody("product.updated", `{"productId":""}`), errHas: "invalid field data.productId"},
		{name: "product.updated with an object product.id", body: aicommerceBody("product.updated", `{"product":{"id":{}}}`), errHas: "invalid field data.product.id"},
		{name: "product.viewed without id", body: aicommerceBody("product.viewed", `{"sessionId":"s"}`), errHas: "missing field data.productId"},
		{name: "chat event without sessionId", body: aicommerceBody("chat.session.created", `{"storeId":"s"}`), errHas: "missing field data.sessionId"},
		{name: "analytics.daily without storeId or date", body: aicommerceBody("analytics.daily", `{"visits":3}`), errHas: "missing field data.storeId"},
		{name: "other event with a bad storeId", body: aicommerceBody("store.closed", `{"storeId":[]}`), errHas: "invalid field data.storeId"},
		// Regression (found by FuzzAICommerceNormalize): a stray "}" after the
		// object was accepted and the invalid JSON written as raw.
		{name: "stray closing brace", body: []byte(`{"event":"0","timestamp":"0000-01-01T0:00:00Z","data":{}}}`), errHas: "trailing data"},
	}
}

// The contract's sample signed as its verifier checks it; the "signature"
// field in the body plays no part.
func TestAICommerceContractVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: []string{"your-webhook-secret"}})
	body := []byte(aicommerceSample)
	h := src.Adapter.(Signer).Sign(body)
	if got := h.Get("X-Webhook-Signature"); got != aicommerceSampleSig || h.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v, want signature %s", h, aicommerceSampleSig)
	}
	if err := verifyErr(t.Context(), src, &Request{Header: h, Body: body}); err != nil {
		t.Fatal(err)
	}
	b, err := normalizeSigned(t, src, &Request{Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Changes) != 0 || len(b.Events) != 1 {
		t.Fatalf("batch %+v", b)
	}
	e := b.Events[0]
	if e.Key() != "ns:sess_abc123" || e.EventType != "chat.message.received" || e.Raw != aicommerceSample ||
		!e.OccurredAt.Equal(time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)) || e.EventID != bodyEventID("aic", body) || e.Provider != "aicommerce" {
		t.Fatalf("event %+v", e)
	}
}

// The header must be sha256=<hex> of the raw body; a signature inside the
// body is never looked at.
func TestAICommerceVerify(t *testing.T) {
	src := oneSource(t, config.Source{Name: "aic", Provider: "aicommerce", Secrets: []string{"old", "your-webhook-secret"}})
	body := []byte(aicommerceSample)
	hexSig := strings.TrimPrefix(aicommerceSampleSig, "sha256=")
	// A body whose "signature" field holds its own valid header value.
	selfSigned := []byte(strings.Replace(aicommerceSample, "sha256=abc123...", aicommerceSampleSig, 1))
	for _, tc := range []struct {
		name, header string
		body         []byte
		want         error
	}{
		{"contract vector with the second secret", aicommerceSampleSig, body, nil},
		{"uppercase hex", "sha256=" + strings.ToUpper(hexSig), body, nil},
		{"absent header, signature only in the body", "", selfSigned, ErrMissingSignature},
		{"header of another body", aicommerceSampleSig, selfSigned, ErrBadSignature},
		{"bare hex", hexSig, body, ErrMalformedSignature},
		{"prefix only", "sha256=", body, ErrMalformedSignature},
		{"sha1 prefix", "sha1=" + hexSig, body, ErrMalformedSignature},
		{"non-hex", "sha256=" + strings.Repeat("g", 64), body, ErrMalformedSignature},
		{"SHA-1 length", "sha256=" + hexSig[:40], body, ErrMalformedSignature},
		{"line break", aicommerceSampleSig + "\r\n", body, ErrMalformedSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Webhook-Signature": {tc.header}}, Body: tc.body})
			wantErrIs(t, err, tc.want)
		})
	}
}

// Which event goes where: product.added/updated are changes keyed by the
// product, everything else an event keyed by its subject.
func TestAICommerceNormalize(t *testing.T) {
	src := oneSource(t, config.Source{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: []string{"s"}})
	for _, tc := range []struct {
		name   string
		body   []byte
		change bool
		key    string
	}{
		{"product.added by data.productId", aicommerceBody("product.added", `{"productId":"p1","product":{"id":"p2"},"id":"p3"}`), true, "ns:p1"},
		{"product.added by data.product.id", aicommerceBody("product.added", `{"product":{"id":"p2"},"id":"p3"}`), true, "ns:p2"},
		{"product.updated by data.id", aicommerceBody("product.updated", `{"id":"p3","name":"Shoe"}`), true, "ns:p3"},
		{"integer product id", aicommerceBody("product.updated", `{"productId":12345}`), true, "ns:12345"},
		{"null productId falls through", aicommerceBody("product.updated", `{"productId":null,"id":"p3"}`), true, "ns:p3"},
		{"product.viewed", aicommerceBody("product.viewed", `{"productId":"p9","sessionId":"s1"}`), false, "ns:p9"},
		{"product.viewed by data.product.id", aicommerceBody("product.viewed", `{"product":{"id":"p8"}}`), false, "ns:p8"},
		{"chat.session.created", aicommerceBody("chat.session.created", `{"sessionId":"sess1","storeId":"st"}`), false, "ns:sess1"},
		{"chat.message.sent", aicommerceBody("chat.message.sent", `{"sessionId":"sess2","products":[]}`), false, "ns:sess2"},
		{"chat.message.received", []byte(aicommerceSample), false, "ns:sess_abc123"},
		{"analytics.daily by storeId", aicommerceBody("analytics.daily", `{"storeId":"store_xyz","date":"2024-01-15"}`), false, "ns:store_xyz"},
		{"analytics.daily by date", aicommerceBody("analytics.daily", `{"date":"2024-01-15","visits":10}`), false, "ns:2024-01-15"},
		{"unknown event by storeId", aicommerceBody("store.settings.changed", `{"storeId":"st"}`), false, "ns:st"},
		{"unknown event by its name", aicommerceBody("store.settings.changed", `{}`), false, "ns:store.settings.changed"},
		{"product.deleted is not in the contract: an event", aicommerceBody("product.deleted", `{"productId":"p1"}`), false, "ns:product.deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := normalizeSigned(t, src, &Request{Body: tc.body})
			if err != nil {
				t.Fatal(err)
			}
			if b.Len() != 1 {
				t.Fatalf("batch %+v", b)
			}
			event := strings.Split(string(tc.body), `"`)[3]
			if tc.change {
				c := b.Changes[0]
				if len(b.Changes) != 1 || c.Key() != tc.key || c.Resource != "product" || c.EventType != event || c.Raw != string(tc.body) {
					t.Fatalf("change %+v", b)
				}
				return
			}
			e := b.Events[0]
			if len(b.Events) != 1 || e.Key() != tc.key || e.EventType != event || e.Raw != string(tc.body) || e.OccurredAt.IsZero() {
				t.Fatalf("event %+v", b)
			}
		})
	}
}

// A product's fields come from data, else from data.product, exactly.
func TestAICommerceProductFields(t *testing.T) {
	src := oneSource(t, config.Source{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: []string{"s"}})
	for _, tc := range []struct {
		name                                   string
		data                                   string
		title, price, currency, desc, img, url string
	}{
		{"flat data", `{"productId":"p","name":"Shoe","price":59.90,"currency":"EUR","description":"d","imageUrl":"i","url":"u"}`,
			"Shoe", "59.90", "EUR", "d", "i", "u"},
		{"nested product", `{"product":{"id":"p","name":"Shoe","price":"12.5","currency":"USD","description":"d","image":"i2","url":"u"}}`,
			"Shoe", "12.5", "USD", "d", "i2", "u"},
		{"data wins over data.product", `{"productId":"p","name":"Top","product":{"name":"Nested","price":1,"imageUrl":"i"}}`,
			"Top", "1", "", "", "i", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := normalizeSigned(t, src, &Request{Body: aicommerceBody("product.updated", tc.data)})
			if err != nil {
				t.Fatal(err)
			}
			f := b.Changes[0].Fields
			for _, c := range []struct {
				what string
				got  *string
				want string
			}{{"title", f.Title, tc.title}, {"price", f.Price, tc.price}, {"currency", f.Currency, tc.currency},
				{"description", f.Description, tc.desc}, {"image", f.ImageURL, tc.img}, {"url", f.URL, tc.url}} {
				if c.want == "" && c.got != nil || c.want != "" && (c.got == nil || *c.got != c.want) {
					t.Errorf("%s: got %v, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

// Through the edge: product events land on the changes topic, the others
// on the events topic, keyed by subject.
func TestAICommerceEventsRouting(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: []string{"s1"}}}, Deps{}, 5*time.Second)
	sign := hexSigner(aicommerceSignatureHeader, "sha256=", nil)
	bodies := [][]byte{
		aicommerceBody("product.added", `{"productId":"p1","name":"Shoe"}`),
		aicommerceBody("product.viewed", `{"productId":"p1"}`),
		aicommerceBody("chat.session.created", `{"sessionId":"sess1"}`),
		[]byte(aicommerceSample),
		aicommerceBody("analytics.daily", `{"storeId":"store_xyz","visits":3}`),
	}
	for _, b := range bodies {
		if status, raw := familyPost(t, f.url+"/webhooks/aic", b, sign("s1", b)); status != http.StatusAccepted || string(raw) != `{"accepted":1}` {
			t.Fatalf("%s: %d %s", b, status, raw)
		}
	}
	changes := f.records()
	if len(changes) != 1 || string(changes[0].Key) != "ns:p1" {
		t.Fatalf("changes topic: %v", changes)
	}
	var got []string
	for _, r := range f.recordsOf(testEventsTopic) {
		e, err := f.serde.DecodeEvent(t.Context(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(r.Key)+" "+e.EventType)
	}
	want := []string{"ns:p1 product.viewed", "ns:sess1 chat.session.created", "ns:sess_abc123 chat.message.received", "ns:store_xyz analytics.daily"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("events topic: %v, want %v", got, want)
	}
}

// A retried delivery (AICommerce retries up to 3 times) is answered as
// accepted without being written again.
func TestAICommerceRetryWritesOnce(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: []string{"s1"},
		DedupeWindow: 10 * time.Minute}}, Deps{}, 5*time.Second)
	sign := hexSigner(aicommerceSignatureHeader, "sha256=", nil)
	body := aicommerceBody("product.added", `{"productId":"p1","price":10}`)
	for i := range 2 {
		if status, raw := familyPost(t, f.url+"/webhooks/aic", body, sign("s1", body)); status != http.StatusAccepted || string(raw) != `{"accepted":1}` {
			t.Fatalf("delivery %d: %d %s", i+1, status, raw)
		}
	}
	if recs := f.records(); len(recs) != 1 || string(recs[0].Key) != "ns:p1" {
		t.Fatalf("want exactly one record, got %v", recs)
	}
	// The same event at a later time is a new delivery.
	later := []byte(strings.Replace(string(body), "10:30:00Z", "10:31:00Z", 1))
	if status, raw := familyPost(t, f.url+"/webhooks/aic", later, sign("s1", later)); status != http.StatusAccepted {
		t.Fatalf("later delivery: %d %s", status, raw)
	}
	if n := len(f.records()); n != 2 {
		t.Fatalf("want 2 records after a later delivery, got %d", n)
	}
}
