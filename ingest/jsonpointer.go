package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// jsonPointer is a parsed JSON pointer (RFC 6901): its reference tokens,
// unescaped. No tokens refers to the whole document.
type jsonPointer []string

// parseJSONPointer parses s, which is "" (the whole document) or a sequence
// of "/"-prefixed reference tokens in which "~0" stands for "~" and "~1"
// for "/". Any other "~" is an error.
func parseJSONPointer(s string) (jsonPointer, error) {
	if s == "" {
		return jsonPointer{}, nil
	}
	if s[0] != '/' {
		return nil, fmt.Errorf("JSON pointer %q must start with /", s)
	}
	parts := strings.Split(s[1:], "/")
	p := make(jsonPointer, len(parts))
	for i, part := range parts {
		tok, ok := unescapePointerToken(part)
		if !ok {
			return nil, fmt.Errorf("JSON pointer %q: ~ must be followed by 0 or 1", s)
		}
		p[i] = tok
	}
	return p, nil
}

func unescapePointerToken(s string) (string, bool) {
	if !strings.Contains(s, "~") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '~' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", false
		}
		switch s[i+1] {
		case '0':
			b.WriteByte('~')
		case '1':
			b.WriteByte('/')
		default:
			return "", false
		}
		i++
	}
	return b.String(), true
}

// String is the pointer as written: parseJSONPointer(p.String()) is p.
func (p jsonPointer) String() string {
	var b strings.Builder
	for _, tok := range p {
		b.WriteByte('/')
		tok = strings.ReplaceAll(tok, "~", "~0")
		b.WriteString(strings.ReplaceAll(tok, "/", "~1"))
	}
	return b.String()
}

// parent is the pointer to the value that holds p's target (p itself when
// p is the whole document).
func (p jsonPointer) parent() jsonPointer {
	if len(p) == 0 {
		return p
	}
	return p[:len(p)-1]
}

// lookup evaluates p over the JSON document doc, decoding only the
// containers along the path, and returns the target's raw JSON. ok is false
// when the target does not exist: a missing member, an index past the end
// (or "-"), a token that is not an array index, a scalar on the way, or a
// document that is not valid JSON where it is descended. Members are
// matched exactly; with duplicate members the last one counts, as in the
// rest of the package.
func (p jsonPointer) lookup(doc []byte) (raw json.RawMessage, ok bool) {
	raw = doc
	for _, tok := range p {
		if raw, ok = pointerChild(raw, tok); !ok {
			return nil, false
		}
	}
	return raw, true
}

// pointerChild returns the member tok of the object v, or the element tok
// of the array v.
func pointerChild(v json.RawMessage, tok string) (json.RawMessage, bool) {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return nil, false
	}
	switch v[0] {
	case '{':
		var o map[string]json.RawMessage
		if err := json.Unmarshal(v, &o); err != nil {
			return nil, false
		}
		c, ok := o[tok]
		return c, ok
	case '[':
		i, ok := pointerIndex(tok)
		if !ok {
			return nil, false
		}
		var a []json.RawMessage
		if err := json.Unmarshal(v, &a); err != nil || i >= len(a) {
			return nil, false
		}
		return a[i], true
	}
	return nil, false
}

// pointerIndex parses an array index token: "0" or digits without a
// leading zero. "-" (the element after the last) never exists for lookup.
func pointerIndex(tok string) (int, bool) {
	if tok == "" || len(tok) > 9 || tok[0] == '0' && len(tok) > 1 {
		return 0, false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(tok)
	return n, err == nil
}
