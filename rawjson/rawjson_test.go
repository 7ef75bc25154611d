package rawjson

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/productstream/productstream/jsondepth"
)

// Split gives what it replaced: gjson's validity and members (ForEach)
// and jsondepth's verdict, on valid, invalid and deep texts.
func TestSplitMatchesGJSON(t *testing.T) {
	for _, text := range []string{
		`{}`, ` { } `, `{"a":1}`, "{\n\"a\" : \"x\" ,\t\"b\":[1,{\"c\":null}] }", `{"a":1,"a":2}`, `{"k\"e\\y\u0041":"v\"}"}`,
		`{"a":{"b":{"c":{}}}}`, `{"a":"[[[[{{{{"}`, `{"n":-1.5e10,"t":true,"f":false}`, `[1,2]`, `"s"`, `12`, ``, `{`, `{"a":}`,
		`{"a":1,}`, `{"a" 1}`, `{"a":1} x`, `[[[[[[`, `{"a":[[[[]]]]}`, `{"a":"\x01"}`, `null`,
	} {
		for _, limit := range []int{1, 2, 3, 4, 64} {
			members, object, deep := Split(text, nil, limit, AsIs)
			if want := jsondepth.Exceeds(text, limit); deep != want {
				t.Errorf("%q limit %d: too deep %v, want %v", text, limit, deep, want)
			}
			if deep {
				continue // a dead letter: its members do not matter
			}
			obj := gjson.Parse(text)
			wantObject := gjson.Valid(text) && obj.IsObject()
			if object != wantObject {
				t.Fatalf("%q: object %v, want %v", text, object, wantObject)
			}
			if !wantObject {
				continue
			}
			var want []Member
			obj.ForEach(func(k, v gjson.Result) bool {
				want = append(want, Member{Name: k.String(), Key: k.Raw, Value: v.Raw})
				return true
			})
			if len(members) != len(want) {
				t.Fatalf("%q: members %q, want %q", text, members, want)
			}
			for i := range want {
				if members[i] != want[i] {
					t.Errorf("%q: member %d %q, want %q", text, i, members[i], want[i])
				}
			}
		}
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,"x\"y"]},"c":null}`, `[{}]`, strings.Repeat("{\"a\":", 5) + "1" + strings.Repeat("}", 5),
		`{"abcdefghij\"klm":"0123456789\n\u00e9\tabcdefgh","x":[0.5e-3,-0,{"y":false}]}`, "{\"a\":\"abcdefg\x1f\"}", `{"é€":"日本語テキスト"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		members, object, deep := Split(text, nil, 3, AsIs)
		if deep != jsondepth.Exceeds(text, 3) {
			t.Errorf("too deep %v, want %v", deep, !deep)
		}
		if deep {
			return // a dead letter: its members do not matter
		}
		obj := gjson.Parse(text)
		if object != (gjson.Valid(text) && obj.IsObject()) {
			t.Fatalf("%q: object %v", text, object)
		}
		if !object {
			return
		}
		i := 0
		obj.ForEach(func(k, v gjson.Result) bool {
			if i >= len(members) || members[i] != (Member{Name: k.String(), Key: k.Raw, Value: v.Raw}) {
				t.Fatalf("member %d: %q", i, members)
			}
			i++
			return true
		})
		if i != len(members) {
			t.Fatalf("%d members, want %d", len(members), i)
		}
	})
}
