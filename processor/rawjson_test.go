package processor

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/productstream/productstream/jsondepth"
)

// splitRaw gives what it replaced: gjson's validity and members (ForEach)
// and jsondepth's verdict, on valid, invalid and deep texts.
func TestSplitRawMatchesGJSON(t *testing.T) {
	for _, text := range []string{
		`{}`, ` { } `, `{"a":1}`, "{\n\"a\" : \"x\" ,\t\"b\":[1,{\"c\":null}] }", `{"a":1,"a":2}`, `{"k\"e\\y\u0041":"v\"}"}`,
		`{"a":{"b":{"c":{}}}}`, `{"a":"[[[[{{{{"}`, `{"n":-1.5e10,"t":true,"f":false}`, `[1,2]`, `"s"`, `12`, ``, `{`, `{"a":}`,
		`{"a":1,}`, `{"a" 1}`, `{"a":1} x`, `[[[[[[`, `{"a":[[[[]]]]}`, `{"a":"\x01"}`, `null`,
	} {
		for _, limit := range []int{1, 2, 3, 4, 64} {
			raw, deep := splitRaw(text, nil, limit)
			if want := jsondepth.Exceeds(text, limit); deep != want {
				t.Errorf("%q limit %d: too deep %v, want %v", text, limit, deep, want)
			}
			if deep {
				continue // a dead letter: its members do not matter
			}
			obj := gjson.Parse(text)
			wantObject := gjson.Valid(text) && obj.IsObject()
			if raw.object != wantObject {
				t.Fatalf("%q: object %v, want %v", text, raw.object, wantObject)
			}
			if !wantObject {
				continue
			}
			var want []rawMember
			obj.ForEach(func(k, v gjson.Result) bool {
				want = append(want, rawMember{name: k.String(), member: member{k.Raw, v.Raw}})
				return true
			})
			if len(raw.members) != len(want) {
				t.Fatalf("%q: members %q, want %q", text, raw.members, want)
			}
			for i := range want {
				if raw.members[i] != want[i] {
					t.Errorf("%q: member %d %q, want %q", text, i, raw.members[i], want[i])
				}
			}
		}
	}
}

func FuzzSplitRaw(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,"x\"y"]},"c":null}`, `[{}]`, strings.Repeat("{\"a\":", 5) + "1" + strings.Repeat("}", 5),
		`{"abcdefghij\"klm":"0123456789\n\u00e9\tabcdefgh","x":[0.5e-3,-0,{"y":false}]}`, "{\"a\":\"abcdefg\x1f\"}", `{"é€":"日本語テキスト"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		raw, deep := splitRaw(text, nil, 3)
		if deep != jsondepth.Exceeds(text, 3) {
			t.Errorf("too deep %v, want %v", deep, !deep)
		}
		if deep {
			return // a dead letter: its members do not matter
		}
		obj := gjson.Parse(text)
		if raw.object != (gjson.Valid(text) && obj.IsObject()) {
			t.Fatalf("%q: object %v", text, raw.object)
		}
		if !raw.object {
			return
		}
		i := 0
		obj.ForEach(func(k, v gjson.Result) bool {
			if i >= len(raw.members) || raw.members[i] != (rawMember{name: k.String(), member: member{k.Raw, v.Raw}}) {
				t.Fatalf("member %d: %q", i, raw.members)
			}
			i++
			return true
		})
		if i != len(raw.members) {
			t.Fatalf("%d members, want %d", len(raw.members), i)
		}
	})
}
