package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/productstream/productstream/rawjson"
)

// bodyText is body as a string, without copying it: the raw JSON a change
// carries, the text parseObject parses, and the text fields a change
// carries (object.text). Its callers never write to a body once it was
// read (readBody reads into a buffer of its own, and a message is decoded
// into one), so the string stays what it was; and what holds the string
// lives no longer than the request: the batch until it is encoded, an
// object's keys. Strings kept longer (ids, dedupe keys) are copies.
func bodyText(body []byte) string {
	return unsafe.String(unsafe.SliceData(body), len(body))
}

// maxIDLen bounds a product id: it becomes part of a Kafka key.
const maxIDLen = 512

// object is a parsed JSON object whose values stay raw until asked for.
type object map[string]json.RawMessage

// parseObject parses body as one JSON object, the one payload check every
// provider's Normalize makes. It refuses invalid UTF-8, so the raw body can
// travel as an Avro string, and nesting deeper than maxDepth levels, which
// the parsers of consumers and sinks refuse. One pass (rawjson.Split)
// validates, bounds the depth and splits the members, after the UTF-8
// check. The values are slices of body, and the keys, unless escaped,
// substrings of it; a repeated key keeps its last value, as encoding/json
// does.
func parseObject(body []byte, maxDepth int) (object, error) {
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: body is not valid UTF-8", ErrInvalidPayload)
	}
	// Room for 8 members: most payloads fit, and a larger one grows as
	// it must.
	members, isObject, tooDeep := rawjson.Split(bodyText(body), make([]rawjson.Member, 0, 8), maxDepth, rawjson.AsIs)
	if tooDeep {
		return nil, fmt.Errorf("%w: body nests deeper than %d levels", ErrInvalidPayload, maxDepth)
	}
	if !isObject {
		return nil, explainInvalid(body)
	}
	// Room for 8 members, the most a map holds without a table of its
	// own: most payloads fit, and a larger one grows as it must.
	o := make(object, 8)
	for _, m := range members {
		o[m.Name] = bodyBytes(m.Value)
	}
	return o, nil
}

// bodyBytes is bodyText undone: text that slices a body, as the body's
// own bytes again, without copying them.
func bodyBytes(text string) json.RawMessage {
	return unsafe.Slice(unsafe.StringData(text), len(text))
}

// explainInvalid says what is wrong with a body that is not one valid JSON
// value, distinguishing trailing data after an object (encoding/json reads
// one value and then sees what follows).
func explainInvalid(body []byte) error {
	var o object
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&o); err != nil || o == nil {
		return fmt.Errorf("%w: body is not a JSON object", ErrInvalidPayload)
	}
	return fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidPayload)
}

// plainString returns the text of a JSON string without escapes, or false
// (the caller then decodes it in full).
func plainString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return "", false
	}
	return string(raw[1 : len(raw)-1]), true
}

// Why checkID refuses an id; callers wrap them with ErrInvalidPayload and
// the field's name ("field productId holds a control character").
var (
	errLoneSurrogate = errors.New("holds an unpaired UTF-16 surrogate escape")
	errControlChar   = errors.New("holds a control character")
)

// checkID refuses an id that readers of raw would not all see as the same
// key, and one that would carry control characters into a record key as
// they are. raw is the JSON text id was decoded from (nil for a value
// that never was JSON, such as a header); id is its text after unescaping.
// Refused, whatever the provider:
//   - an escaped lone surrogate in raw: \ud800-\udbff not followed by an
//     escaped \udc00-\udfff, or such a low half alone. encoding/json
//     turns every one into U+FFFD, so "p\ud800" and "p\udbff" would be
//     one key, while other parsers read two different ids from raw;
//   - a control character in id (unicode.IsControl: C0, DEL and C1), such
//     as NUL or a line break.
//
// A U+FFFD the sender wrote, escaped or not, is valid Unicode and stays.
// The scan is linear and allocates nothing.
func checkID(raw json.RawMessage, id string) error {
	if strings.ContainsFunc(id, unicode.IsControl) {
		return errControlChar
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped byte
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			continue // not JSON; the decoder has refused it already
		}
		i += 4
		if !utf16.IsSurrogate(r) {
			continue
		}
		if r >= 0xdc00 {
			return errLoneSurrogate // a low half with no high half before it
		}
		if len(raw) > i+2 && raw[i+1] == '\\' && raw[i+2] == 'u' {
			if lo, ok := hex4(raw[i+3:]); ok && lo >= 0xdc00 && lo <= 0xdfff {
				i += 6
				continue
			}
		}
		return errLoneSurrogate
	}
	return nil
}

// hex4 decodes the four hex digits b starts with, as a \u escape holds.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// text returns the first of keys that holds a string (nil if none does).
// A string without escapes is the body's own text (bodyText), not a copy:
// a change's fields live no longer than its batch.
func (o object) text(keys ...string) *string {
	for _, k := range keys {
		raw := o[k]
		if len(raw) == 0 || raw[0] != '"' {
			continue // absent, or not a string
		}
		if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
			s := bodyText(raw[1 : len(raw)-1])
			return &s
		}
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			return &s
		}
	}
	return nil
}

// decimal returns the first of keys that holds a number, or a string that
// parses as one, written exactly as sent.
func (o object) decimal(keys ...string) *string {
	for _, k := range keys {
		raw := o[k]
		if len(raw) == 0 || raw[0] == '{' || raw[0] == '[' || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' {
			continue // absent, or not a number or a string
		}
		n, ok := jsonNumber(raw)
		if !ok {
			continue
		}
		if _, err := strconv.ParseFloat(n, 64); err == nil {
			return &n
		}
	}
	return nil
}

// jsonNumber returns the number raw holds, as encoding/json decodes a
// json.Number: a number as written, or the text of a string that is one.
// The plain cases are read without decoding through reflection: a valid
// JSON text that starts with a minus or a digit and ends with a digit is
// exactly one number.
func jsonNumber(raw json.RawMessage) (string, bool) {
	plain := raw
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		plain = raw[1 : len(raw)-1]
	}
	if len(plain) > 0 && (plain[0] == '-' || isDigit(plain[0])) && isDigit(plain[len(plain)-1]) && json.Valid(plain) {
		return bodyText(plain), true // the body's own text, as object.text's
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n.String(), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// availability returns a stock state as text: a string as sent, or
// "in_stock"/"out_of_stock" for a boolean.
func (o object) availability(keys ...string) *string {
	if s := o.text(keys...); s != nil {
		return s
	}
	for _, k := range keys {
		if len(o[k]) == 0 {
			continue // absent
		}
		var b bool
		if err := json.Unmarshal(o[k], &b); err == nil {
			s := "out_of_stock"
			if b {
				s = "in_stock"
			}
			return &s
		}
	}
	return nil
}

// time returns the first of keys holding an RFC 3339 time (zero if none).
func (o object) time(keys ...string) time.Time {
	if s := o.text(keys...); s != nil {
		if t, err := time.Parse(time.RFC3339Nano, *s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// bodyEventID is the event id of a delivery that carries none of its own:
// the same source and body always give the same id, so a retried delivery
// can be recognised.
func bodyEventID(source string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write(body)
	var sum [sha256.Size]byte
	const prefix = "sha256:"
	id := [len(prefix) + 32]byte{}
	copy(id[:], prefix)
	hex.Encode(id[len(prefix):], h.Sum(sum[:0])[:16]) // 32 hex digits
	return string(id[:])
}
