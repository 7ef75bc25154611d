package jsondepth

import (
	"encoding/json"
	"strings"
	"testing"
)

// refDepth is the nesting depth of a decoded JSON value, the reference the
// scan is checked against.
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

// nested is n arrays, one inside the other, around inner.
func nested(n int, inner string) string {
	return strings.Repeat("[", n) + inner + strings.Repeat("]", n)
}

// Each case pins down one part of the scan: brackets in strings and escapes
// do not count, and the depth of {} is 1.
func TestExceeds(t *testing.T) {
	cases := []struct {
		name  string
		json  string
		depth int
	}{
		{"scalar", `"x"`, 0},
		{"number", `12`, 0},
		{"empty object", `{}`, 1},
		{"empty array", `[]`, 1},
		{"object in array", `[{"a":1}]`, 2},
		{"siblings do not add up", `{"a":[1],"b":{"c":2},"d":[]}`, 2},
		{"brackets in a string", `{"a":"[[[{{{"}`, 1},
		{"escaped quote then bracket in a string", `{"a":"\"[[["}`, 1},
		{"escaped backslash ends the escape", `{"a":"\\","b":[[1]]}`, 3},
		{"escaped backslash before a quote", `["\\\"]]]"]`, 1},
		{"unicode escape", `{"a":"\u005b\u007b"}`, 1},
		{"64 deep", nested(63, `{}`), 64},
		{"65 deep", nested(64, `{}`), 65},
		{"20,000 deep", nested(20000, ""), 20000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{max(tc.depth-1, 0), tc.depth, tc.depth + 1, 0} {
				want := tc.depth > limit
				if got := Exceeds(tc.json, limit); got != want {
					t.Fatalf("Exceeds(string, %d) = %v, want %v", limit, got, want)
				}
				if got := Exceeds([]byte(tc.json), limit); got != want {
					t.Fatalf("Exceeds([]byte, %d) = %v, want %v", limit, got, want)
				}
			}
		})
	}
}

// The scan allocates nothing, for a string or a byte slice.
func TestExceedsAllocatesNothing(t *testing.T) {
	s := nested(30, `{"a":"[\"x\\"}`)
	b := []byte(s)
	if n := testing.AllocsPerRun(100, func() { Exceeds(s, Default); Exceeds(b, Default) }); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

// FuzzExceeds: on every valid JSON text the scan agrees with the depth of
// what encoding/json decodes, at every limit around it.
func FuzzExceeds(f *testing.F) {
	for _, seed := range []string{
		`{}`, `[]`, `1`, `"[{"`, `{"a":[{"b":"\"]"}]}`, `["\\",[["\\\""]]]`, `{"\u005b":[]}`,
		nested(70, `{"a":"b"}`), `[[],[[]],[[[]]]]`, `{"a":1,}`, `[[`, `]]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		if json.Unmarshal(b, &v) != nil {
			Exceeds(b, Default) // anything else: it must only not panic
			return
		}
		depth := refDepth(v)
		for _, limit := range []int{0, max(depth-1, 0), depth, depth + 1, Default} {
			if got, want := Exceeds(b, limit), depth > limit; got != want {
				t.Fatalf("%q: Exceeds(%d) = %v, encoding/json decodes depth %d", b, limit, got, depth)
			}
		}
	})
}

// BenchmarkExceeds scans the load harness's 1 KB body: a few short
// members and a long description.
func BenchmarkExceeds(b *testing.B) {
	body := []byte(`{"productId":"p1","price":"19.99","currency":"EUR","title":"Bench product p1","updatedAt":"2026-11-30T12:00:00Z","seq":1,"description":"` +
		strings.Repeat("lorem ipsum ", 75) + `"}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if Exceeds(body, Default) {
			b.Fatal("a flat body exceeds the default depth")
		}
	}
}
