package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
)

// Regression tests of issue 10's two payload weaknesses, through the real
// edge for every provider family: bodies nested deeper than the source's
// max_json_depth, and ids that are not the same key for every reader of
// raw (lone surrogate escapes) or carry control characters.

// refDepth is the nesting depth of a value decoded by encoding/json: the
// reference for jsondepth in the fuzz oracles.
func refDepth(v any) int {
	deepest := 0
	switch v := v.(type) {
	case map[string]any:
		for _, c := range v {
			deepest = max(deepest, refDepth(c))
		}
	case []any:
		for _, c := range v {
			deepest = max(deepest, refDepth(c))
		}
	default:
		return 0
	}
	return deepest + 1
}

// refIDText reports whether the JSON string raw is fit for a record key,
// written apart from checkID as the fuzz oracles' reference: it decodes
// raw into UTF-16 code units, then wants every surrogate paired and no
// unit a control character.
func refIDText(raw []byte) bool {
	s := string(bytes.TrimSpace(raw))
	if len(s) < 2 || s[0] != '"' {
		return false
	}
	var units []uint16
	for i := 1; i < len(s)-1; {
		switch {
		case s[i] == '\\' && s[i+1] == 'u':
			v, err := strconv.ParseUint(s[i+2:i+6], 16, 16)
			if err != nil {
				return false
			}
			units, i = append(units, uint16(v)), i+6
		case s[i] == '\\':
			c := map[byte]uint16{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[s[i+1]]
			units, i = append(units, c), i+2
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			units, i = utf16.AppendRune(units, r), i+n
		}
	}
	for i := 0; i < len(units); i++ {
		u := units[i]
		switch {
		case u >= 0xd800 && u < 0xdc00:
			if i+1 == len(units) || units[i+1] < 0xdc00 || units[i+1] > 0xdfff {
				return false
			}
			i++
		case u >= 0xdc00 && u <= 0xdfff, unicode.IsControl(rune(u)):
			return false
		}
	}
	return true
}

// nest returns body, a JSON object, with a member "deep" of arrays added so
// that the whole body nests exactly depth levels (body's own members nest
// less).
func nest(body []byte, depth int) []byte {
	i := bytes.LastIndexByte(body, '}')
	out := append(bytes.Clone(body[:i]), `,"deep":`...)
	out = append(out, bytes.Repeat([]byte("["), depth-1)...)
	out = append(out, bytes.Repeat([]byte("]"), depth-1)...)
	return append(out, body[i:]...)
}

// pcWritten returns the keys on the changes and events topics, sorted.
func pcWritten(f *fixture) []string {
	var keys []string
	for _, topic := range []string{testTopic, testEventsTopic} {
		for _, r := range f.recordsOf(topic) {
			keys = append(keys, string(r.Key))
		}
	}
	slices.Sort(keys)
	return keys
}

// pcSend posts body with h, failing t on transport errors.
func pcSend(t *testing.T, f *fixture, path string, body []byte, h http.Header) (int, map[string]any) {
	t.Helper()
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	status, resp, _ := f.postT(t, path, bytes.NewReader(body), int64(len(body)), m)
	return status, resp
}

// pcFamily is one provider family as the payload regressions post to it.
type pcFamily struct {
	name   string
	source config.Source
	path   string
	sign   func(secret string, body []byte) http.Header
	// valid is a valid body, writing keys.
	valid []byte
	keys  []string
	// ok is the success status (default 202); refusal turns an error text
	// into the whole refusal body (default {"error": text}).
	ok      int
	refusal func(text string) map[string]any
	// body is a valid body whose product id is the JSON text id, at the
	// field called field in errors (empty: not tested for ids), written
	// under key prefix.
	body   func(id string) []byte
	field  string
	prefix string
}

func (fam *pcFamily) defaults() {
	if fam.ok == 0 {
		fam.ok = http.StatusAccepted
	}
	if fam.refusal == nil {
		fam.refusal = func(text string) map[string]any { return map[string]any{"error": text} }
	}
}

// pcFamilies are the provider families whose body is the payload (Tipser's
// comes inside an SNS envelope: see the Tipser tests below).
func pcFamilies() []pcFamily {
	lisaSrc := config.Source{Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop-eu",
		Secrets: []string{"s1"}, APIKeys: []string{"k1"}}
	dsSrc := config.Source{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds", Secrets: []string{"s1"}}
	dsRefusal := func(text string) map[string]any {
		return map[string]any{"success": false, "error": strings.TrimPrefix(text, "invalid payload: ")}
	}
	return []pcFamily{
		{
			name:   "lisa",
			source: lisaSrc,
			path:   "/plugin-notifications/plugin-42/updates",
			sign:   hexSigner("X-Hmac-Signature", "", http.Header{"Authorization": {"ApiKey k1"}}),
			valid:  []byte(`{"productId":"p1","price":19.99}`),
			keys:   []string{"shop-eu:p1"},
			body:   func(id string) []byte { return []byte(`{"productId":` + id + `,"price":1}`) },
			field:  "field productId",
			prefix: "shop-eu:",
		},
		{
			name:    "datasembly barcode",
			source:  dsSrc,
			path:    "/v2/ingest/productlistings/manual/acme",
			sign:    datasemblySigner,
			valid:   datasemblyValid(1),
			keys:    []string{"ds:bc1", "ds:sku-1"},
			ok:      http.StatusOK,
			refusal: dsRefusal,
			body:    func(id string) []byte { return dsBody(dsListing("barcode", id, "sku", "")) },
			field:   "invalid field barcode (listings[0]):",
			prefix:  "ds:",
		},
		{
			name:    "datasembly sku",
			source:  dsSrc,
			path:    "/v2/ingest/productlistings/manual/acme",
			sign:    datasemblySigner,
			ok:      http.StatusOK,
			refusal: dsRefusal,
			body:    func(id string) []byte { return dsBody(dsListing("barcode", "", "sku", id)) },
			field:   "invalid field sku (listings[0]):",
			prefix:  "ds:",
		},
		{
			name:   "iimmpact",
			source: config.Source{Name: "iim", Provider: "iimmpact", Namespace: "iim", Secrets: []string{"s1"}},
			path:   "/webhooks/iim",
			sign:   hexSigner(iimmpactSignatureHeader, "sha256=", nil),
			valid:  iimmpactValid(0),
			keys:   []string{"iim:R0"},
			body:   func(id string) []byte { return iimmpactEvent("product.updated", "products", id, `{"name":"P"}`) },
			field:  "invalid field id:",
			prefix: "iim:",
		},
		{
			name:   "aicommerce",
			source: config.Source{Name: "aic", Provider: "aicommerce", Namespace: "aic", Secrets: []string{"s1"}},
			path:   "/webhooks/aic",
			sign:   hexSigner(aicommerceSignatureHeader, "sha256=", nil),
			valid:  aicommerceValid(1),
			keys:   []string{"aic:s1"}, // an analytics event, on the events topic
			body:   func(id string) []byte { return aicommerceBody("product.added", `{"productId":`+id+`}`) },
			field:  "invalid field data.productId:",
			prefix: "aic:",
		},
		{
			name: "hmac",
			source: config.Source{Name: "gh", Provider: "hmac", Namespace: "gh", Secrets: []string{"s1"},
				HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}},
			path:   "/webhooks/gh",
			sign:   hexSigner("X-Hub-Signature-256", "sha256=", nil),
			valid:  []byte(`{"id":"p1","title":"Shoe"}`),
			keys:   []string{"gh:p1"},
			body:   func(id string) []byte { return []byte(`{"id":` + id + `}`) },
			field:  "field /id",
			prefix: "gh:",
		},
		{
			name:   "standardwebhooks",
			source: cfgSWSource("sw"),
			path:   "/webhooks/sw",
			sign:   cfgSWSigner,
			valid:  []byte(`{"type":"product.updated","data":{"id":"p1"}}`),
			keys:   []string{"sw:p1"},
			body:   func(id string) []byte { return []byte(`{"type":"product.updated","data":{"id":` + id + `}}`) },
			field:  "field /data/id",
			prefix: "sw:",
		},
	}
}

// Regression (issue 10, A): a validly signed body nested 20,000 deep is
// refused with 400 and a clear error before it is parsed, and nothing
// reaches Kafka; a body exactly at the limit (64) is accepted whole.
func TestDeepBodyRefusedByEveryProvider(t *testing.T) {
	for _, fam := range pcFamilies() {
		if fam.valid == nil {
			continue
		}
		fam.defaults()
		t.Run(fam.name, func(t *testing.T) {
			f := startEdge(t, []config.Source{fam.source}, Deps{}, 5*time.Second)
			deep := nest(fam.valid, 20000)
			status, resp := pcSend(t, f, fam.path, deep, fam.sign("s1", deep))
			want := fam.refusal("invalid payload: body nests deeper than 64 levels")
			if status != http.StatusBadRequest || !reflect.DeepEqual(resp, want) {
				t.Fatalf("20,000 deep: %d %v, want 400 %v", status, resp, want)
			}
			if got := pcWritten(f); len(got) != 0 {
				t.Fatalf("a refused body wrote %v", got)
			}
			edge := nest(fam.valid, jsondepth.Default)
			if status, resp := pcSend(t, f, fam.path, edge, fam.sign("s1", edge)); status != fam.ok {
				t.Fatalf("exactly 64 deep: %d %v, want %d", status, resp, fam.ok)
			}
			if got := pcWritten(f); !slices.Equal(got, fam.keys) {
				t.Fatalf("Kafka holds %v, want %v", got, fam.keys)
			}
		})
	}
}

// Regression (issue 10, A): the bound is the source's max_json_depth.
func TestDeepBodyBoundIsPerSource(t *testing.T) {
	fam := pcFamilies()[0]
	fam.source.MaxJSONDepth = 8
	f := startEdge(t, []config.Source{fam.source}, Deps{}, 5*time.Second)
	deeper := nest(fam.valid, 9)
	status, resp := pcSend(t, f, fam.path, deeper, fam.sign("s1", deeper))
	if want := "invalid payload: body nests deeper than 8 levels"; status != http.StatusBadRequest || errorText(resp) != want {
		t.Fatalf("9 deep with max_json_depth 8: %d %v, want 400 %q", status, resp, want)
	}
	edge := nest(fam.valid, 8)
	if status, resp := pcSend(t, f, fam.path, edge, fam.sign("s1", edge)); status != http.StatusAccepted {
		t.Fatalf("8 deep with max_json_depth 8: %d %v", status, resp)
	}
	if got := pcWritten(f); !slices.Equal(got, fam.keys) {
		t.Fatalf("Kafka holds %v, want %v", got, fam.keys)
	}
}

// Regression (issue 10, A): a Tipser message nested 20,000 deep inside a
// validly signed envelope is refused like any body, and an envelope that
// itself nests deeper than 64 levels (an unsigned extra member) is refused
// before anything is fetched; a message at the limit is accepted.
func TestDeepTipserMessageRefused(t *testing.T) {
	b := newSNSBed(t)
	f := startEdge(t, []config.Source{b.source("tipser-main")}, b.deps(), 5*time.Second)
	valid := []byte(tipserEvent("product-changed", `{"productId":"p1"}`))

	m := b.sign(t, b.notification("deep-envelope", string(valid)), "2")
	body := nest(m.body(t), 20000)
	status, resp, _ := f.postT(t, "/webhooks/tipser-main", bytes.NewReader(body), int64(len(body)), snsHeaders(m))
	if want := "invalid payload: SNS envelope nests deeper than 64 levels"; status != http.StatusBadRequest || errorText(resp) != want {
		t.Fatalf("deep envelope: %d %v, want 400 %q", status, resp, want)
	}
	if n := b.hits(); n != 0 {
		t.Fatalf("a deep envelope made %d outbound requests", n)
	}

	m = b.sign(t, b.notification("deep-message", string(nest(valid, 20000))), "2")
	status, resp = postSNS(t, f, "tipser-main", m)
	if want := "Tipser message: invalid payload: body nests deeper than 64 levels"; status != http.StatusBadRequest || errorText(resp) != want || len(resp) != 1 {
		t.Fatalf("deep message: %d %v, want 400 %q", status, resp, want)
	}
	if got := pcWritten(f); len(got) != 0 {
		t.Fatalf("refused messages wrote %v", got)
	}

	edge := nest(valid, jsondepth.Default)
	if status, resp := postSNS(t, f, "tipser-main", b.sign(t, b.notification("edge", string(edge)), "2")); status != http.StatusAccepted {
		t.Fatalf("message exactly 64 deep: %d %v", status, resp)
	}
	if chs := tipserChanges(t, f); len(chs) != 1 || chs[0].Key() != "tip:p1" || chs[0].Raw != string(edge) {
		t.Fatalf("Kafka holds %d changes, want tip:p1 with the message as raw", len(chs))
	}
}

// pcIDCases are the ids every reader must refuse (with the reason) or
// accept (with the key it writes).
var pcIDCases = []struct {
	name string
	id   string // JSON text
	why  string // "" accepted
	key  string // the key's id, when accepted
}{
	{"high surrogate alone", `"p\ud800"`, "holds an unpaired UTF-16 surrogate escape", ""},
	{"another high surrogate alone", `"p\udbff"`, "holds an unpaired UTF-16 surrogate escape", ""},
	{"low surrogate alone", `"p\udc00"`, "holds an unpaired UTF-16 surrogate escape", ""},
	{"high surrogate then a character", `"\uD83Dx"`, "holds an unpaired UTF-16 surrogate escape", ""},
	{"two high surrogates", `"\ud83d\ud83d"`, "holds an unpaired UTF-16 surrogate escape", ""},
	{"NUL", `"p\u0000"`, "holds a control character", ""},
	{"line break", `"p\nq"`, "holds a control character", ""},
	{"trailing line break", `"p\n"`, "holds a control character", ""},
	{"DEL", `"p` + "\x7f" + `"`, "holds a control character", ""},
	{"C1 control", `"p\u0085q"`, "holds a control character", ""},
	{"surrogate pair", `"\ud83d\ude00"`, "", "\U0001F600"},
	{"surrogate pair upper case", `"x\uD83D\uDE00"`, "", "x\U0001F600"},
	{"U+FFFD as sent", `"p` + "\uFFFD" + `"`, "", "p\uFFFD"},
	{"U+FFFD escaped", `"q\ufffd"`, "", "q\uFFFD"},
	{"escaped backslash before u", `"r\\ud800"`, "", `r\ud800`},
}

// Regression (issue 10, B): through every reader that turns a body's id
// into a record key, ids that are lone surrogate escapes or hold control
// characters are refused with 400 naming the field and write nothing; a
// surrogate pair and a U+FFFD the sender wrote are accepted, and the key
// holds the right characters.
func TestInvalidIDsRefusedByEveryProvider(t *testing.T) {
	for _, fam := range pcFamilies() {
		fam.defaults()
		t.Run(fam.name, func(t *testing.T) {
			f := startEdge(t, []config.Source{fam.source}, Deps{}, 5*time.Second)
			var want []string
			for _, tc := range pcIDCases {
				body := fam.body(tc.id)
				status, resp := pcSend(t, f, fam.path, body, fam.sign("s1", body))
				if tc.why == "" {
					if status != fam.ok {
						t.Fatalf("%s: %d %v, want %d", tc.name, status, resp, fam.ok)
					}
					want = append(want, fam.prefix+tc.key)
					continue
				}
				text := "invalid payload: " + fam.field + " " + tc.why
				if status != http.StatusBadRequest || !reflect.DeepEqual(resp, fam.refusal(text)) {
					t.Fatalf("%s: %d %v, want 400 %v", tc.name, status, resp, fam.refusal(text))
				}
			}
			slices.Sort(want)
			if got := pcWritten(f); !slices.Equal(got, want) {
				t.Fatalf("Kafka holds %q, want %q", got, want)
			}
		})
	}
}

// Regression (issue 10, B): Tipser's ids and collection ids become keys;
// both are checked.
func TestInvalidTipserIDsRefused(t *testing.T) {
	b := newSNSBed(t)
	f := startEdge(t, []config.Source{b.source("tipser-main")}, b.deps(), 5*time.Second)
	var want []string
	for i, tc := range pcIDCases {
		for _, at := range []struct{ field, message string }{
			{"data.productId", tipserEvent("product-changed", `{"productId":`+tc.id+`}`)},
			{"data.collectionsIds[1]", tipserEvent("product-in-collection-changed", `{"productId":"c`+strconv.Itoa(i)+`","collectionsIds":["ok",`+tc.id+`]}`)},
			{"data.collectionId", tipserEvent("collection-added", `{"collectionId":`+tc.id+`}`)},
		} {
			m := b.sign(t, b.notification(fmt.Sprintf("%s-%d", at.field, i), at.message), "2")
			status, resp := postSNS(t, f, "tipser-main", m)
			if tc.why != "" {
				text := "invalid payload: field " + at.field + " " + tc.why
				if status != http.StatusBadRequest || errorText(resp) != text || len(resp) != 1 {
					t.Fatalf("%s at %s: %d %v, want 400 %q", tc.name, at.field, status, resp, text)
				}
				continue
			}
			if status != http.StatusAccepted {
				t.Fatalf("%s at %s: %d %v", tc.name, at.field, status, resp)
			}
			if at.field == "data.collectionsIds[1]" {
				want = append(want, "tip:c"+strconv.Itoa(i)+" ok,"+tc.key)
			} else {
				want = append(want, "tip:"+tc.key+" ")
			}
		}
	}
	var got []string
	for _, ch := range tipserChanges(t, f) {
		got = append(got, ch.Key()+" "+strings.Join(ch.CollectionIDs, ","))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Kafka holds %q, want %q", got, want)
	}
}

// Regression (issue 10, B): a header that becomes an event id or an event
// type is refused when it holds a control character (a tab, or a C1
// control, which HTTP lets through); the webhook-id of Standard Webhooks
// too, as a malformed signature header.
func TestControlCharactersInIDHeadersRefused(t *testing.T) {
	shop := config.Source{Name: "shop", Provider: "hmac", Namespace: "shop", Secrets: []string{"s1"},
		HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload, DedupeWindow: time.Minute}
	f := startEdge(t, []config.Source{shop, cfgSWSource("sw")}, Deps{}, 5*time.Second)
	body := []byte(`{"id":1}`)
	for _, tc := range []struct{ header, value string }{
		{"X-Shopify-Webhook-Id", "a\tb"},
		{"X-Shopify-Webhook-Id", "a\u0085b"},
		{"X-Shopify-Topic", "products/\tupdate"},
	} {
		h := cfgB64Signer("X-Shopify-Hmac-Sha256", func() http.Header {
			return http.Header{"X-Shopify-Topic": {"products/update"}, "X-Shopify-Webhook-Id": {"w1"}}
		})("s1", body)
		h.Set(tc.header, tc.value)
		status, resp := pcSend(t, f, "/webhooks/shop", body, h)
		if want := "invalid payload: " + tc.header + " holds a control character"; status != http.StatusBadRequest || errorText(resp) != want {
			t.Fatalf("%s %q: %d %v, want 400 %q", tc.header, tc.value, status, resp, want)
		}
	}
	id, ts := "msg\t1", strconv.FormatInt(time.Now().Unix(), 10)
	swBody := []byte(`{"data":{"id":"p1"}}`)
	status, resp := pcSend(t, f, "/webhooks/sw", swBody, http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts},
		"Webhook-Signature": {cfgSWSign("s1", id, ts, swBody)}})
	if status != http.StatusBadRequest || !strings.Contains(errorText(resp), "webhook-id must be UTF-8 of at most 512 bytes, without control characters") {
		t.Fatalf("webhook-id with a tab: %d %v", status, resp)
	}
	if got := pcWritten(f); len(got) != 0 {
		t.Fatalf("refused deliveries wrote %v", got)
	}
}

// checkID and the reference agree on the cases above, and checkID needs no
// allocation.
func TestCheckID(t *testing.T) {
	for _, tc := range pcIDCases {
		var s string
		if err := json.Unmarshal([]byte(tc.id), &s); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err := checkID(json.RawMessage(tc.id), s)
		if got := ""; err != nil {
			got = err.Error()
			if got != tc.why {
				t.Fatalf("%s: %q, want %q", tc.name, got, tc.why)
			}
		} else if tc.why != "" || s != tc.key {
			t.Fatalf("%s: accepted as %q, want %q refused for %q", tc.name, s, tc.key, tc.why)
		}
		if refIDText([]byte(tc.id)) != (tc.why == "") {
			t.Fatalf("%s: the reference disagrees", tc.name)
		}
	}
	raw := json.RawMessage(`"abc\ud83d\ude00\n"`)
	if n := testing.AllocsPerRun(100, func() { _ = checkID(raw, "abc") }); n != 0 {
		t.Fatalf("checkID allocates %v times", n)
	}
}

// FuzzCheckID: checkID accepts exactly the JSON strings whose UTF-16 code
// units pair every surrogate and hold no control character.
func FuzzCheckID(f *testing.F) {
	for _, tc := range pcIDCases {
		f.Add([]byte(tc.id))
	}
	f.Add([]byte(`"\\\ud800"`))
	f.Add([]byte(`"\ud800\\udc00"`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s string
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '"' || !utf8.Valid(raw) || json.Unmarshal(raw, &s) != nil {
			return // not a JSON string, or not in a valid body
		}
		if err := checkID(raw, s); (err == nil) != refIDText(raw) {
			t.Fatalf("%q: checkID %v, reference %v", raw, err, refIDText(raw))
		}
	})
}
