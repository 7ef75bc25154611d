// Package jsondepth bounds how deeply JSON nests. Every change carries its
// sender's JSON in raw, which the changes, products and updates topics pass
// on to every consumer and sink; Python's json, Go's encoding/json and
// Jackson all refuse very deep nesting, so one such body would break each of
// them. Ingest refuses it at the edge and the processor dead-letters it.
//
// It is a package of its own, not part of schemas, because config names its
// default as well as ingest and the processor use it: config should not pull
// in the Avro codecs for one constant, and the processor cannot import
// ingest.
package jsondepth

import (
	"bytes"
	"strings"
)

const (
	// Default is the deepest nesting accepted when none is configured:
	// far more than any catalog payload needs, far less than any parser's
	// limit.
	Default = 64
	// Max is the largest bound that may be configured: encoding/json
	// refuses anything deeper, so a higher bound would let through JSON
	// that Go consumers cannot read.
	Max = 10000
)

// Exceeds reports whether the JSON text b nests objects and arrays more than
// limit (0 or more) levels deep. The depth of a scalar is 0, of {} and [] 1, of
// {"a":[1]} 2. It reads b once, allocates nothing, and stops at the first
// level past limit, so a body nested 20,000 deep costs a scan and nothing
// more. Strings are skipped a quote at a time (the long descriptions
// catalog bodies carry are most of their bytes), the rest byte by byte.
//
// It does not validate: brackets inside strings are skipped (escapes
// included), and for text that is not JSON the answer says only how its
// brackets nest. Check depth before a parser, and let the parser refuse
// what is not JSON.
func Exceeds[T string | []byte](b T, limit int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i+1)
		case '{', '[':
			if depth++; depth > limit {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// stringEnd returns the index of the quote that ends the string whose
// text starts at from, or len(b) when none does: the first quote after
// an even number of backslashes (each pair is one escaped backslash; an
// odd one left over escapes the quote).
func stringEnd[T string | []byte](b T, from int) int {
	for {
		q := indexQuote(b[from:])
		if q < 0 {
			return len(b)
		}
		q += from
		run := q
		for run > from && b[run-1] == '\\' {
			run--
		}
		if (q-run)%2 == 0 {
			return q
		}
		from = q + 1
	}
}

// indexQuote is strings.IndexByte or bytes.IndexByte, whichever b is: the
// vectorised search, not a loop over every byte.
func indexQuote[T string | []byte](b T) int {
	switch t := any(b).(type) {
	case string:
		return strings.IndexByte(t, '"')
	case []byte:
		return bytes.IndexByte(t, '"')
	}
	panic("jsondepth: unreachable")
}
