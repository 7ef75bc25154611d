package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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

// Regression (issue 10, A): the bound is the source's max_json_depth.
func TestDeepBodyBoundIsPerSource(t *testing.T) {
	src := lisaSource(func(s *config.Source) { s.MaxJSONDepth = 8 })
	f := startEdge(t, src, Deps{}, 5*time.Second)
	valid := []byte(`{"productId":"p1","price":19.99}`)
	deeper := nest(valid, 9)
	status, resp, _ := f.post("/webhooks/lisa-main", bytes.NewReader(deeper), int64(len(deeper)), lisaHeaders(deeper))
	if want := "invalid payload: body nests deeper than 8 levels"; status != http.StatusBadRequest || errorText(resp) != want {
		t.Fatalf("9 deep with max_json_depth 8: %d %v, want 400 %q", status, resp, want)
	}
	edge := nest(valid, 8)
	if status, resp, _ := f.post("/webhooks/lisa-main", bytes.NewReader(edge), int64(len(edge)), lisaHeaders(edge)); status != http.StatusAccepted {
		t.Fatalf("8 deep with max_json_depth 8: %d %v", status, resp)
	}
	checkKeys(t, f, "after bodies 9 and 8 deep", []string{"shop-eu:p1"})
}

// Regression (issue 10, A): a Tipser message nested 20,000 deep inside a
// validly signed envelope is refused like any body, and an envelope that
// itself nests deeper than 64 levels (an unsigned extra member) is refused
// before anything is fetched; a message at the limit is accepted.
func TestDeepTipserMessageRefused(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	valid := []byte(tipserEvent("product-changed", `{"productId":"p1"}`))

	m := b.sign(t, b.notification("deep-envelope", string(valid)), "2")
	body := nest(m.body(t), 20000)
	status, resp, _ := f.postT(t, "/webhooks/tipser-main", bytes.NewReader(body), int64(len(body)), snsHeaders(m))
	if want := "invalid payload: SNS envelope nests deeper than 64 levels"; status != http.StatusBadRequest || errorText(resp) != want {
		t.Fatalf("deep envelope: %d %v, want 400 %q", status, resp, want)
	}
	b.wantNoRequestsSince(t, 0, "a deep envelope")

	m = b.sign(t, b.notification("deep-message", string(nest(valid, 20000))), "2")
	status, resp = postSNS(t, f, "tipser-main", m)
	if want := "Tipser message: invalid payload: body nests deeper than 64 levels"; status != http.StatusBadRequest || errorText(resp) != want || len(resp) != 1 {
		t.Fatalf("deep message: %d %v, want 400 %q", status, resp, want)
	}
	checkKeys(t, f, "after refused messages", nil)

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

// Regression (issue 10, B): Datasembly keys a listing by its barcode, else
// its sku: the sku is an id reader of its own (the conformance suite
// covers the barcode and every other provider's).
func TestDatasemblySKUIDsChecked(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds", Secrets: []string{"s1"}}}, Deps{}, 5*time.Second)
	var want []string
	for _, tc := range pcIDCases {
		body := dsBody(dsListing("barcode", "", "sku", tc.id))
		status, resp, _ := f.postHeaders(t, "/v2/ingest/productlistings/manual/acme", body, datasemblySigner("s1", body))
		if tc.why == "" {
			if status != http.StatusOK {
				t.Fatalf("%s: %d %v, want 200", tc.name, status, resp)
			}
			want = append(want, "ds:"+tc.key)
			continue
		}
		text := "invalid field sku (listings[0]): " + tc.why
		if status != http.StatusBadRequest || errorText(resp) != text || resp["success"] != false {
			t.Fatalf("%s: %d %v, want 400 %q", tc.name, status, resp, text)
		}
	}
	checkKeys(t, f, "after every id case as a sku", want)
}

// Regression (issue 10, B): Tipser's ids and collection ids become keys;
// both are checked.
func TestInvalidTipserIDsRefused(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
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
		status, resp, _ := f.postHeaders(t, "/webhooks/shop", body, h)
		if want := "invalid payload: " + tc.header + " holds a control character"; status != http.StatusBadRequest || errorText(resp) != want {
			t.Fatalf("%s %q: %d %v, want 400 %q", tc.header, tc.value, status, resp, want)
		}
	}
	id, ts := "msg\t1", strconv.FormatInt(time.Now().Unix(), 10)
	swBody := []byte(`{"data":{"id":"p1"}}`)
	status, resp, _ := f.postHeaders(t, "/webhooks/sw", swBody, http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts},
		"Webhook-Signature": {cfgSWSign("s1", id, ts, swBody)}})
	if status != http.StatusBadRequest || !strings.Contains(errorText(resp), "webhook-id must be UTF-8 of at most 512 bytes, without control characters") {
		t.Fatalf("webhook-id with a tab: %d %v", status, resp)
	}
	checkKeys(t, f, "after refused deliveries", nil)
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
