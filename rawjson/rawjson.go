// Package rawjson reads JSON text in one pass: it validates it (accepting
// exactly what gjson.Valid accepts), splits an object into its top-level
// members without copying them, and bounds how deeply it nests. The edge
// reads every body with it before normalizing, and the processor every
// change's raw JSON before merging; before it, each did the three in
// passes of their own (utf8 and gjson validation, jsondepth's scan,
// gjson's ForEach).
package rawjson

import (
	"encoding/binary"

	"github.com/tidwall/gjson"

	"github.com/productstream/productstream/jsondepth"
)

// Member is one top-level member of a JSON object, slicing the text it was
// split from: Key as written (its quotes and escapes included), Name its
// text unescaped, and Value its value's text.
type Member struct{ Name, Key, Value string }

// AsIs is the mk of Split for a caller that keeps its Members as they are.
func AsIs(m Member) Member { return m }

// Split validates text and reports whether it is a JSON object and whether
// it nests deeper than limit. When it is an object not too deep, it
// appends each member to dst, made into an M by mk (the caller's own type
// of member, without a copy of the list). One pass over the text does all
// three for valid JSON: it accepts exactly what gjson.Valid accepts, and
// counts the levels as jsondepth.Exceeds does (which it falls back to for
// invalid text). Otherwise members is dst[:0].
func Split[M any](text string, dst []M, limit int, mk func(Member) M) (members []M, object, tooDeep bool) {
	sc := scanner[M]{s: text, limit: limit, mk: mk}
	i := skipSpace(text, 0)
	var ok bool
	if i < len(text) && text[i] == '{' {
		i, ok = sc.object(i+1, 1, &dst)
		object = true
	} else {
		i, ok = sc.value(i, 0)
	}
	if ok && skipSpace(text, i) == len(text) {
		return dst, object, false
	}
	if sc.deep {
		return dst[:0], false, true
	}
	return dst[:0], false, jsondepth.Exceeds(text, limit)
}

// scanner validates JSON text as gjson.Valid does. It stops as soon as a
// value nests deeper than limit, setting deep: the text read so far is
// valid, so jsondepth.Exceeds would count the same levels.
type scanner[M any] struct {
	s     string
	limit int
	deep  bool
	mk    func(Member) M
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// value validates the value at s[i], inside a container at level depth
// (0: the top), and returns the index after it.
func (sc *scanner[M]) value(i, depth int) (int, bool) {
	s := sc.s
	if i >= len(s) {
		return i, false
	}
	switch s[i] {
	case '{':
		return sc.object(i+1, depth+1, nil)
	case '[':
		return sc.array(i+1, depth+1)
	case '"':
		i, ok, _ := sc.str(i + 1)
		return i, ok
	case 't':
		return literal(s, i, "true")
	case 'f':
		return literal(s, i, "false")
	case 'n':
		return literal(s, i, "null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return number(s, i)
	}
	return i, false
}

// object validates the members of the object whose '{' precedes s[i], at
// level depth, appending them to members unless it is nil.
func (sc *scanner[M]) object(i, depth int, members *[]M) (int, bool) {
	if depth > sc.limit {
		sc.deep = true
		return i, false
	}
	s := sc.s
	i = skipSpace(s, i)
	if i < len(s) && s[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return i, false
		}
		keyAt := i
		var ok, escaped bool
		if i, ok, escaped = sc.str(i + 1); !ok {
			return i, false
		}
		key := s[keyAt:i]
		if i = skipSpace(s, i); i >= len(s) || s[i] != ':' {
			return i, false
		}
		i = skipSpace(s, i+1)
		valueAt := i
		if i, ok = sc.value(i, depth); !ok {
			return i, false
		}
		if members != nil {
			name := key[1 : len(key)-1]
			if escaped {
				name = gjson.Parse(key).String()
			}
			*members = append(*members, sc.mk(Member{Name: name, Key: key, Value: s[valueAt:i]}))
		}
		if i = skipSpace(s, i); i >= len(s) {
			return i, false
		}
		switch s[i] {
		case '}':
			return i + 1, true
		case ',':
			i = skipSpace(s, i+1)
		default:
			return i, false
		}
	}
}

// array validates the elements of the array whose '[' precedes s[i], at
// level depth.
func (sc *scanner[M]) array(i, depth int) (int, bool) {
	if depth > sc.limit {
		sc.deep = true
		return i, false
	}
	s := sc.s
	i = skipSpace(s, i)
	if i < len(s) && s[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = sc.value(i, depth); !ok {
			return i, false
		}
		if i = skipSpace(s, i); i >= len(s) {
			return i, false
		}
		switch s[i] {
		case ']':
			return i + 1, true
		case ',':
			i = skipSpace(s, i+1)
		default:
			return i, false
		}
	}
}

// Masks for finding, 8 bytes at a time, a byte that needs a closer look in
// a string: a control character, a quote or a backslash.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special reports whether any byte of w is below 0x20, '"' or '\\'.
func special(w uint64) bool {
	below := (w - ones*0x20) &^ w
	quote := w ^ (ones * '"')
	quote = (quote - ones) &^ quote
	slash := w ^ (ones * '\\')
	slash = (slash - ones) &^ slash
	return (below|quote|slash)&highs != 0
}

// str validates the string whose opening quote precedes s[i] and returns
// the index after its closing quote, and whether it holds an escape.
func (sc *scanner[M]) str(i int) (int, bool, bool) {
	s := sc.s
	escaped := false
	for {
		for i+8 <= len(s) && !special(binary.LittleEndian.Uint64([]byte(s[i:i+8]))) {
			i += 8
		}
		if i >= len(s) {
			return i, false, escaped
		}
		switch c := s[i]; {
		case c == '"':
			return i + 1, true, escaped
		case c < ' ':
			return i, false, escaped
		case c == '\\':
			escaped = true
			if i++; i >= len(s) {
				return i, false, escaped
			}
			switch s[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for range 4 {
					if i++; i >= len(s) || !ishex(s[i]) {
						return i, false, escaped
					}
				}
			default:
				return i, false, escaped
			}
		}
		i++
	}
}

func ishex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func literal(s string, i int, lit string) (int, bool) {
	if len(s)-i >= len(lit) && s[i:i+len(lit)] == lit {
		return i + len(lit), true
	}
	return i, false
}

// number validates the number at s[i] as gjson does: an optional minus,
// 0 or digits not starting with 0, an optional fraction and exponent.
func number(s string, i int) (int, bool) {
	if s[i] == '-' {
		if i++; i >= len(s) || s[i] < '0' || s[i] > '9' {
			return i, false
		}
	}
	if s[i] == '0' {
		i++
	} else {
		i = digits(s, i)
	}
	if i < len(s) && s[i] == '.' {
		if i++; i >= len(s) || s[i] < '0' || s[i] > '9' {
			return i, false
		}
		i = digits(s, i)
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		if i++; i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return i, false
		}
		i = digits(s, i)
	}
	return i, true
}

func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
