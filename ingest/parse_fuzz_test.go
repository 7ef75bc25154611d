package ingest

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/productstream/productstream/jsondepth"
)

// parseObject (gjson) accepts exactly the bodies encoding/json reads as one
// JSON object with nothing after it and nesting at most jsondepth.Default
// levels, and yields the same members.
func FuzzParseObjectMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"productId":"1","price":19.99}`, `{"a":1} }`, `{"a":1}]`, `[1]`, `null`, `{"a":"\u00e9\n","a":2}`,
		`{"a":{"b":[1,2,{"c":null}]},"d":true}`, ` {"x" : "y" } `, `{"a":1,}`, `{'a':1}`, `{"a":01}`, `{"a":"\x"}`, ``,
		`{"a":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`, `{"a":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
		`{"a":"` + strings.Repeat("[", 70) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseObject(body, jsondepth.Default)
		var want map[string]json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(body))
		wantOK := utf8.Valid(body) && dec.Decode(&want) == nil && want != nil
		if wantOK {
			_, tokErr := dec.Token()
			wantOK = tokErr == io.EOF
		}
		// The depth bound, whose scan FuzzExceeds checks against
		// encoding/json on its own.
		wantOK = wantOK && !jsondepth.Exceeds(body, jsondepth.Default)
		if (err == nil) != wantOK {
			t.Fatalf("%q: parseObject error %v, encoding/json accepts %v", body, err, wantOK)
		}
		if err != nil {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d members, encoding/json %d", body, len(got), len(want))
		}
		for k, w := range want {
			var a, b any
			if json.Unmarshal(got[k], &a) != nil || json.Unmarshal(w, &b) != nil {
				t.Fatalf("%q: member %q does not decode", body, k)
			}
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if !bytes.Equal(ja, jb) {
				t.Fatalf("%q: member %q is %s, encoding/json %s", body, k, got[k], w)
			}
		}
	})
}

// jsonNumber reads what encoding/json decodes into a json.Number, and
// refuses what it refuses, whatever raw holds.
func FuzzJSONNumberMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`19.99`, `"19.99"`, `-0`, `1e400`, `"-1.5E+3"`, `01`, `"01"`, `1 `, ` 1`, `"1 "`, `"\u0031"`, `""`, `"`, `"1`, `1"`,
		`-`, `"-"`, `1.`, `"1."`, `null`, `true`, `"abc"`, `{}`, `[1]`, `"1"2"`, `"١"`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := jsonNumber(raw)
		var want json.Number
		wantErr := json.Unmarshal(raw, &want)
		if ok != (wantErr == nil) || ok && got != want.String() {
			t.Fatalf("%q: jsonNumber %q %v, encoding/json %q %v", raw, got, ok, want, wantErr)
		}
	})
}
