package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// maxIDLen bounds a product id: it becomes part of a Kafka key.
const maxIDLen = 512

// object is a parsed JSON object whose values stay raw until asked for.
type object map[string]json.RawMessage

// parseObject parses body as one JSON object. It refuses invalid UTF-8, so
// the raw body can travel as an Avro string. The values are slices of body
// (gjson validates and splits without copying or decoding); a repeated key
// keeps its last value, as encoding/json does.
func parseObject(body []byte) (object, error) {
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: body is not valid UTF-8", ErrInvalidPayload)
	}
	if !gjson.ValidBytes(body) {
		return nil, explainInvalid(body)
	}
	parsed := gjson.ParseBytes(body)
	if !parsed.IsObject() {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrInvalidPayload)
	}
	o := make(object, 16)
	parsed.ForEach(func(k, v gjson.Result) bool {
		o[k.String()] = json.RawMessage(body[v.Index : v.Index+len(v.Raw) : v.Index+len(v.Raw)])
		return true
	})
	return o, nil
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

// id returns the value of key as an id: a non-empty string, or an integer
// number written as it was sent.
func (o object) id(key string) (string, error) {
	raw, ok := o[key]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return "", fmt.Errorf("%w: missing field %s", ErrInvalidPayload, key)
	}
	s, plain := plainString(raw)
	if plain {
		s = strings.TrimSpace(s)
	} else if err := json.Unmarshal(raw, &s); err == nil {
		s = strings.TrimSpace(s)
	} else if _, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		s = string(raw)
	} else {
		return "", fmt.Errorf("%w: field %s must be a string or an integer", ErrInvalidPayload, key)
	}
	if s == "" || len(s) > maxIDLen {
		return "", fmt.Errorf("%w: field %s must hold 1 to %d bytes", ErrInvalidPayload, key, maxIDLen)
	}
	return s, nil
}

// text returns the first of keys that holds a string (nil if none does).
func (o object) text(keys ...string) *string {
	for _, k := range keys {
		raw := o[k]
		if len(raw) == 0 || raw[0] != '"' {
			continue // absent, or not a string
		}
		if s, ok := plainString(raw); ok {
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
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			continue
		}
		if _, err := strconv.ParseFloat(n.String(), 64); err == nil {
			s := n.String()
			return &s
		}
	}
	return nil
}

// availability returns a stock state as text: a string as sent, or
// "in_stock"/"out_of_stock" for a boolean.
func (o object) availability(keys ...string) *string {
	if s := o.text(keys...); s != nil {
		return s
	}
	for _, k := range keys {
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
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:32]
}
