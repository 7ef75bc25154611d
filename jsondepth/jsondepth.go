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
// {"a":[1]} 2. It reads b once, byte by byte, allocates nothing, and stops
// at the first level past limit, so a body nested 20,000 deep costs a scan
// and nothing more.
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
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++ // the escaped byte cannot end the string
				}
			}
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
