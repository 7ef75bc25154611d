package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
)

// Fuzz targets of the configurable providers (hmac, standardwebhooks) and
// of their JSON pointers. Run one with, for example:
//
//	go test -run XXX -fuzz FuzzStandardWebhooksVerify -fuzztime 10s ./ingest/

// cfgFuzzNow is the arrival time of every fuzzed delivery.
var cfgFuzzNow = time.Unix(1_700_000_000, 0)

// cfgFuzzKeys are the keys every verify target checks against ("s1", "s0"
// as raw keys; whsec_ forms for Standard Webhooks).
var cfgFuzzKeys = []string{"s1", "s0"}

// cfgVerifyError fails t unless err is one of the refusals a verifier may
// give.
func cfgVerifyError(t *testing.T, err error) {
	t.Helper()
	for _, want := range []error{ErrMissingSignature, ErrMalformedSignature, ErrBadSignature, ErrStale} {
		if errors.Is(err, want) {
			return
		}
	}
	t.Fatalf("unexpected error kind: %v", err)
}

// cfgFresh reports whether ts is digits only and within tolerance of
// cfgFuzzNow, computed independently of the provider.
func cfgFresh(ts string, tolerance time.Duration) bool {
	if ts == "" || strings.Trim(ts, "0123456789") != "" {
		return false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	d := cfgFuzzNow.Unix() - n
	return d <= int64(tolerance/time.Second) && d >= -int64(tolerance/time.Second)
}

// FuzzGenericHMACVerify: a hex "{timestamp}.{body}" source with a prefix and a
// base64 body-only source accept a delivery only when the presented bytes
// are the MAC of the exact signed bytes under a configured secret (and the
// timestamp is fresh), and always accept the true signature.
func FuzzGenericHMACVerify(f *testing.F) {
	ts := strconv.FormatInt(cfgFuzzNow.Unix(), 10)
	body := []byte(`{"id":"p1"}`)
	stamped := hex.EncodeToString(hmacSHA256([]byte("s1"), append([]byte(ts+"."), body...)))
	plain := base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s0"), body))
	f.Add(false, "v1="+stamped, ts, body)
	f.Add(false, "v1="+strings.ToUpper(stamped), ts, body)
	f.Add(false, "v1="+stamped, "0"+ts, body)
	f.Add(false, "v1=", ts, body)
	f.Add(false, stamped, ts, body)
	f.Add(true, plain, "", body)
	f.Add(true, plain[:43], "", body)
	f.Add(true, plain+"\n", "", body)
	f.Add(true, "", "", []byte{})
	srcs := []*Source{
		oneSource(f, config.Source{Name: "st", Provider: "hmac", Secrets: cfgFuzzKeys, HMAC: cfgStampedHMAC, Payload: cfgStampedPayload}),
		oneSource(f, config.Source{Name: "sh", Provider: "hmac", Secrets: cfgFuzzKeys, HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload}),
	}
	f.Fuzz(func(t *testing.T, useBase64 bool, sig, ts string, body []byte) {
		src, signed, prefix := srcs[0], append([]byte(ts+"."), body...), "v1="
		if useBase64 {
			src, signed, prefix = srcs[1], body, ""
		}
		c := src.Adapter.(*hmacSource).verifier
		verify := func(sig string) error {
			h := http.Header{}
			if sig != "" {
				h[http.CanonicalHeaderKey(c.header)] = []string{sig}
			}
			if ts != "" {
				h["X-Timestamp"] = []string{ts}
			}
			return verifyErr(t.Context(), src, &Request{Header: h, Body: body, Received: cfgFuzzNow})
		}
		decode := func(v string) ([]byte, error) {
			if useBase64 {
				return base64.StdEncoding.Strict().DecodeString(v)
			}
			return hex.DecodeString(v)
		}
		encode := func(mac []byte) string {
			if useBase64 {
				return base64.StdEncoding.EncodeToString(mac)
			}
			return hex.EncodeToString(mac)
		}
		freshEnough := useBase64 || cfgFresh(ts, defaultHMACTolerance)

		if err := verify(sig); err != nil {
			cfgVerifyError(t, err)
		} else {
			rest, ok := strings.CutPrefix(sig, prefix)
			got, derr := decode(rest)
			genuine := false
			for _, k := range cfgFuzzKeys {
				genuine = genuine || derr == nil && bytes.Equal(got, hmacSHA256([]byte(k), signed))
			}
			if !ok || !genuine || !freshEnough || strings.ContainsAny(sig, "\r\n") {
				t.Fatalf("accepted %q (ts %q) that is not a fresh real signature", sig, ts)
			}
		}
		for _, k := range cfgFuzzKeys {
			err := verify(prefix + encode(hmacSHA256([]byte(k), signed)))
			if freshEnough && err != nil {
				t.Fatalf("the true signature under %s was refused (ts %q): %v", k, ts, err)
			}
			if !freshEnough && err == nil {
				t.Fatalf("accepted a stale or malformed timestamp %q", ts)
			}
		}
	})
}

// FuzzStandardWebhooksVerify: a delivery is accepted only when some v1
// entry of webhook-signature is the MAC of exactly id "." timestamp "."
// body under a configured key, the id has no ".", and the timestamp is
// fresh; the true signature of a well-formed delivery is always accepted.
func FuzzStandardWebhooksVerify(f *testing.F) {
	ts := strconv.FormatInt(cfgFuzzNow.Unix(), 10)
	body := []byte(`{"data":{"id":"p1"}}`)
	good := cfgSWSign("s1", "msg_1", ts, body)
	zeros := "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))
	f.Add("msg_1", ts, good, body)
	f.Add("msg_1", ts, zeros+" v2,x "+good, body)
	f.Add("msg_1", ts, "v1a,"+strings.TrimPrefix(good, "v1,"), body)
	f.Add("msg_1", ts, good+"\n", body)
	f.Add("msg.1", ts, cfgSWSign("s1", "msg.1", ts, body), body)
	f.Add("msg_1", "0"+ts, good, body)
	f.Add("msg_1", strconv.FormatInt(cfgFuzzNow.Unix()-300, 10), cfgSWSign("s0", "msg_1", strconv.FormatInt(cfgFuzzNow.Unix()-300, 10), body), body)
	f.Add("", "", "", []byte{})
	src := oneSource(f, config.Source{Name: "sw", Provider: "standardwebhooks", Secrets: []string{cfgWhsec("s1"), cfgWhsec("s0")}, Payload: cfgSWPayload})
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		verify := func(sig string) error {
			h := http.Header{}
			for k, v := range map[string]string{"Webhook-Id": id, "Webhook-Timestamp": ts, "Webhook-Signature": sig} {
				if v != "" {
					h[k] = []string{v}
				}
			}
			return verifyErr(t.Context(), src, &Request{Header: h, Body: body, Received: cfgFuzzNow})
		}
		wellFormed := id != "" && !strings.Contains(id, ".") && len(id) <= maxIDLen && utf8.ValidString(id) &&
			!strings.ContainsFunc(id, unicode.IsControl) && cfgFresh(ts, 5*time.Minute)
		signed := append([]byte(id+"."+ts+"."), body...)
		if err := verify(sig); err != nil {
			cfgVerifyError(t, err)
		} else {
			genuine := false
			for _, entry := range strings.Split(sig, " ") {
				v, ok := strings.CutPrefix(entry, "v1,")
				got, derr := base64.StdEncoding.Strict().DecodeString(v)
				for _, k := range cfgFuzzKeys {
					genuine = genuine || ok && derr == nil && bytes.Equal(got, hmacSHA256([]byte(k), signed))
				}
			}
			if !genuine || !wellFormed || strings.ContainsAny(sig, "\r\n") {
				t.Fatalf("accepted id %q ts %q sig %q: not a fresh real signature", id, ts, sig)
			}
		}
		for _, k := range cfgFuzzKeys {
			err := verify("v2,x " + cfgSWSign(k, id, ts, body))
			if wellFormed && err != nil {
				t.Fatalf("the true signature under %s was refused (id %q ts %q): %v", k, id, ts, err)
			}
			if !wellFormed && err == nil {
				t.Fatalf("accepted a malformed id %q or stale timestamp %q", id, ts)
			}
		}
	})
}

// cfgPointerRef evaluates a pointer's tokens over a fully decoded document,
// written independently of jsonPointer.lookup, as the reference.
func cfgPointerRef(doc any, tokens []string) (any, bool) {
	for _, tok := range tokens {
		switch v := doc.(type) {
		case map[string]any:
			c, ok := v[tok]
			if !ok {
				return nil, false
			}
			doc = c
		case []any:
			if tok != "0" && (tok == "" || tok[0] < '1' || tok[0] > '9' || strings.Trim(tok, "0123456789") != "") {
				return nil, false
			}
			i, err := strconv.Atoi(tok)
			if err != nil || i >= len(v) {
				return nil, false
			}
			doc = v[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// cfgDecode decodes JSON keeping numbers as written.
func cfgDecode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// FuzzJSONPointer: parsing round-trips through String, only pointers with a
// leading "/" and well-formed "~" escapes parse, and lookup agrees with an
// evaluation over the fully decoded document.
func FuzzJSONPointer(f *testing.F) {
	doc := []byte(`{"foo":["bar","baz"],"":0,"a/b":1,"m~n":8,"n":{"x":[{"y":null}]},"d":1,"d":2}`)
	for _, p := range []string{"", "/", "/foo/0", "/foo/-", "/foo/01", "/a~1b", "/m~0n", "/n/x/0/y", "/d", "/~2", "x", "/~"} {
		f.Add(p, doc)
	}
	f.Add("/0", []byte(` [1,2] `))
	f.Add("/a", []byte(`{"a":`))
	f.Fuzz(func(t *testing.T, ptr string, doc []byte) {
		p, err := parseJSONPointer(ptr)
		if err != nil {
			// Only a missing leading "/" or a bad "~" escape is an error.
			okEscapes := strings.Count(ptr, "~") == strings.Count(ptr, "~0")+strings.Count(ptr, "~1")
			if (ptr == "" || ptr[0] == '/') && okEscapes {
				t.Fatalf("parseJSONPointer(%q): %v", ptr, err)
			}
			return
		}
		if got := p.String(); got != ptr {
			t.Fatalf("String() = %q, want %q", got, ptr)
		}
		raw, found := p.lookup(doc)
		whole, err := cfgDecode(doc)
		if err != nil || !json.Valid(doc) {
			return
		}
		want, wantFound := cfgPointerRef(whole, p)
		if found != wantFound {
			t.Fatalf("lookup(%q) found=%v, reference found=%v", ptr, found, wantFound)
		}
		if !found {
			return
		}
		got, err := cfgDecode(raw)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("lookup(%q) = %s, reference %v (%v)", ptr, raw, want, err)
		}
	})
}

// FuzzConfigurableNormalize: the configurable providers' Normalize never
// panics, refuses only with ErrInvalidPayload, and otherwise yields one
// change whose id is the value at the id pointer (checked against a full
// decode, and refIDText on its JSON text), fit for a record key, with the
// body as raw.
func FuzzConfigurableNormalize(f *testing.F) {
	for _, b := range []string{
		`{"type":"product.updated","data":{"id":"p1","title":"Mug","price":"9.5"}}`,
		`{"type":"product.deleted","data":{"id":42}}`,
		`{"type":null,"data":{"id":" x "}}`,
		`{"type":7,"data":{"id":"p"}}`,
		`{"data":{"id":1.5}}`,
		`{"data":[{"id":"p"}]}`,
		`{"data":{"id":"p"}} {}`,
		`[]`,
		"{\"data\":{\"id\":\"\xff\"}}",
		`{"data":{"id":"p\ud800"}}`,
		`{"data":{"id":"\ud83d\ude00"}}`,
		`{"data":{"id":"p\u0000"}}`,
		`{"data":{"id":"p"},"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(b), "products/delete", "msg_1")
	}
	payload := &config.Payload{IDPointer: "/data/id", TypePointer: "/type", DeleteTypes: []string{"product.deleted", "products/delete"}}
	headerPayload := &config.Payload{IDPointer: "/data/id", TypeHeader: "X-Topic", DeleteTypes: payload.DeleteTypes}
	srcs := []*Source{
		oneSource(f, config.Source{Name: "a", Provider: "hmac", Secrets: cfgFuzzKeys, HMAC: cfgGitHubHMAC, Payload: payload}),
		oneSource(f, config.Source{Name: "b", Provider: "hmac", Secrets: cfgFuzzKeys, HMAC: cfgShopifyHMAC, Payload: headerPayload}),
		oneSource(f, config.Source{Name: "c", Provider: "standardwebhooks", Secrets: []string{cfgWhsec("s1")}, Payload: payload}),
	}
	f.Fuzz(func(t *testing.T, body []byte, topic, webhookID string) {
		h := http.Header{"X-Topic": {topic}, "X-Shopify-Webhook-Id": {webhookID}, "Webhook-Id": {webhookID}}
		// What a full decode says about the body, independently of lookup.
		var refID any
		refValid := false
		if _, err := parseObject(body, jsondepth.Default); err == nil {
			whole, _ := cfgDecode(body)
			refID, _ = cfgPointerRef(whole, []string{"data", "id"})
			// The id's JSON text, found by decoding into maps, whose keys
			// match exactly.
			var top, data map[string]json.RawMessage
			json.Unmarshal(body, &top)
			json.Unmarshal(top["data"], &data)
			switch v := refID.(type) {
			case string:
				refValid = strings.TrimSpace(v) != "" && len(strings.TrimSpace(v)) <= maxIDLen && refIDText(data["id"])
			case json.Number:
				_, err := strconv.ParseInt(v.String(), 10, 64)
				refValid = err == nil && len(v.String()) <= maxIDLen
			}
			switch typ, _ := cfgPointerRef(whole, []string{"type"}); v := typ.(type) {
			case nil:
			case string:
				refValid = refValid && len(v) <= maxIDLen
			default:
				refValid = false
			}
		}
		headerValid := func(v string) bool {
			return utf8.ValidString(v) && len(v) <= maxIDLen && !strings.ContainsFunc(v, unicode.IsControl)
		}
		topicValid := headerValid(topic)
		for _, src := range srcs {
			req := &Request{Header: h, Body: body, Received: cfgFuzzNow}
			var v Verified
			if src.Name == "c" {
				// What Verify returns for a Standard Webhooks delivery: its
				// webhook-id, signed. Normalize is fuzzed with ids Verify
				// would refuse too.
				v = Verified{Request: req, Identity: Identity{ID: webhookID, Signed: true}}
			} else {
				v = verifiedFor(t, src, req)
			}
			b, err := src.Adapter.Normalize(t.Context(), v)
			if err != nil {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("%s: unexpected error kind: %v", src.Name, err)
				}
				// The header-typed source ignores /type; a bad topic or
				// overlong event id header is its own refusal.
				if refValid && (src.Name != "b" || topicValid && headerValid(webhookID)) {
					t.Fatalf("%s: refused a body whose id is %#v: %v", src.Name, refID, err)
				}
				continue
			}
			if len(b.Changes) != 1 || len(b.Events) != 0 {
				t.Fatalf("%s: batch %+v", src.Name, b)
			}
			ch := b.Changes[0]
			if ch.ProductID == "" || len(ch.ProductID) > maxIDLen || !utf8.ValidString(ch.ProductID) ||
				!utf8.ValidString(ch.EventType) || ch.EventType == "" || ch.Raw != string(body) {
				t.Fatalf("%s: change unfit for a record: %+v", src.Name, ch)
			}
			switch v := refID.(type) {
			case string:
				if strings.TrimSpace(v) != ch.ProductID {
					t.Fatalf("%s: id %q, reference %q", src.Name, ch.ProductID, v)
				}
			case json.Number:
				if v.String() != ch.ProductID {
					t.Fatalf("%s: id %q, reference %s", src.Name, ch.ProductID, v)
				}
			default:
				t.Fatalf("%s: id %q from a %T", src.Name, ch.ProductID, refID)
			}
			if ch.Deleted != slices.Contains(payload.DeleteTypes, ch.EventType) {
				t.Fatalf("%s: deleted=%v for type %q", src.Name, ch.Deleted, ch.EventType)
			}
			if src.Name == "c" && ch.EventID != webhookID || src.Name == "a" && ch.EventID != bodyEventID("a", body) {
				t.Fatalf("%s: event id %q", src.Name, ch.EventID)
			}
		}
	})
}
