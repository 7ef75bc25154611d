package schemas

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/linkedin/goavro/v2"
)

// Decoding a ProductChange field by field. goavro decodes a record into a
// map[string]any, with a map for each union value too, which is most of
// the cost of decoding a change. A changePlan decodes the same bytes with
// goavro codecs compiled for each field's type, in the writer schema's
// field order (a record's binary encoding is its fields' encodings, one
// after the other), and sets each field of the Change as it is decoded:
// no record or union map is built. A union of null and one other type is
// its branch index (a zigzag varint) and then, unless null, that type's
// encoding. A string, the most common type, is its length (a zigzag
// varint too) and its bytes, read without a codec. A writer schema the
// plan cannot follow, or whose values would read otherwise than from the
// map, is decoded through the map: a named type used twice, a union of
// more types, a union where changeFromNative reads a plain value or the
// reverse, fields that are no record.

// fieldPlan decodes one field of a record.
type fieldPlan struct {
	name   string
	codec  *goavro.Codec // the field's type; for a nullable union, its other branch; bytes for text
	null   int64         // a nullable union's null branch: 0 or 1; -1 for no union
	record *recordPlan   // a record field, decoded field by field
	// text: the field is a string, read by textFromBinary and handed over
	// as the bytes read, so that it is copied once, into the string the
	// field is set to, and never boxed in an interface.
	text bool
}

// recordPlan decodes a record, field by field.
type recordPlan struct{ fields []fieldPlan }

// errNoPlan is why a writer schema is decoded through the map.
var errNoPlan = errors.New("schema not decodable field by field")

// newChangePlan plans a ProductChange writer schema, given in JSON form.
// Its fields record is nested; of its other fields only occurred_at is a
// union, and every field of the fields record is one, as changeFromNative
// reads them.
func newChangePlan(schema map[string]any) (*recordPlan, error) {
	return newRecordPlan(schema, func(name string) bool { return name == "occurred_at" }, true)
}

// newRecordPlan plans the record schema whose JSON form is schema, whose
// fields are unions of null and another type where optional says so, and
// whose field "fields" is a nested record if nest (its fields all unions).
func newRecordPlan(schema map[string]any, optional func(string) bool, nest bool) (*recordPlan, error) {
	if schema["type"] != "record" {
		return nil, errNoPlan
	}
	fields, _ := schema["fields"].([]any)
	plan := &recordPlan{fields: make([]fieldPlan, 0, len(fields))}
	for _, f := range fields {
		field, _ := f.(map[string]any)
		name, _ := field["name"].(string)
		if name == "" {
			return nil, errNoPlan
		}
		fp := fieldPlan{name: name, null: -1}
		typ := field["type"]
		union, isUnion := typ.([]any)
		if isUnion != optional(name) {
			return nil, errNoPlan
		}
		if isUnion {
			if len(union) != 2 {
				return nil, errNoPlan
			}
			switch {
			case union[0] == "null":
				fp.null, typ = 0, union[1]
			case union[1] == "null":
				fp.null, typ = 1, union[0]
			default:
				return nil, errNoPlan
			}
		}
		rec, isRecord := typ.(map[string]any)
		isRecord = isRecord && rec["type"] == "record"
		if (name == "fields" && nest) != isRecord {
			return nil, errNoPlan
		}
		if isRecord {
			nested, err := newRecordPlan(rec, func(string) bool { return true }, false)
			if err != nil {
				return nil, err
			}
			fp.record = nested
		} else {
			text, err := json.Marshal(typ)
			if err != nil {
				return nil, errNoPlan
			}
			if typ == "string" {
				// The bytes codec (the binary encodings are the same)
				// reads what textFromBinary leaves to goavro.
				fp.text, text = true, []byte(`"bytes"`)
			}
			// A name defined elsewhere in the schema does not compile on
			// its own: the map decodes such a schema.
			if fp.codec, err = goavro.NewCodecForStandardJSONFull(string(text)); err != nil {
				return nil, errNoPlan
			}
		}
		plan.fields = append(plan.fields, fp)
	}
	return plan, nil
}

// fieldSink takes a record's decoded fields: set a field's native value
// (nil for null; never a union's map), text a string field's bytes (only
// valid during the call), and nested the sink of a nested record's fields.
type fieldSink struct {
	set    func(name string, v any)
	text   func(name string, b []byte)
	nested func(name string) fieldSink
}

// decode decodes the record at the start of buf into sink and returns
// what follows it.
func (rp *recordPlan) decode(buf []byte, sink fieldSink) ([]byte, error) {
	for i := range rp.fields {
		f := &rp.fields[i]
		if f.record != nil {
			var err error
			if buf, err = f.record.decode(buf, sink.nested(f.name)); err != nil {
				return nil, err
			}
			continue
		}
		if f.null >= 0 {
			branch, n := binary.Varint(buf)
			if n <= 0 || (branch != 0 && branch != 1) {
				return nil, fmt.Errorf("field %q: bad union branch", f.name)
			}
			buf = buf[n:]
			if branch == f.null {
				sink.set(f.name, nil)
				continue
			}
		}
		if f.text {
			b, rest, err := textFromBinary(buf, f.codec)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
			buf = rest
			sink.text(f.name, b)
			continue
		}
		v, rest, err := f.codec.NativeFromBinary(buf)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		buf = rest
		sink.set(f.name, v)
	}
	return buf, nil
}

// textFromBinary reads the string at the start of buf, as its bytes (a
// piece of buf), and returns what follows it. A string's encoding is its
// length in bytes, a long (a zigzag varint, like a union's branch), and
// then the bytes; it is read here, not by goavro, whose codecs hand the
// bytes over boxed in an interface, an allocation for every string. A
// length that overflows a varint's 64 bits is left to bytes, goavro's
// bytes codec, which reads such lengths its own way.
func textFromBinary(buf []byte, bytes *goavro.Codec) ([]byte, []byte, error) {
	size, n := binary.Varint(buf)
	switch {
	case n < 0:
		v, rest, err := bytes.NativeFromBinary(buf)
		if err != nil {
			return nil, nil, err
		}
		b, _ := v.([]byte)
		return b, rest, nil
	case n == 0:
		return nil, nil, fmt.Errorf("cannot decode binary string: %w", io.ErrShortBuffer)
	case size < 0:
		return nil, nil, fmt.Errorf("cannot decode binary string: negative size: %d", size)
	case size > int64(len(buf)-n):
		return nil, nil, fmt.Errorf("cannot decode binary string: %w", io.ErrShortBuffer)
	}
	buf = buf[n:]
	return buf[:size], buf[size:], nil
}

// changePlan is the plan of a writer schema id, or nil when the map
// decodes it. Plans are kept with the codecs, by schema id.
func (s *Serde) changePlan(id int, c *goavro.Codec) *recordPlan {
	if p, ok := s.plans.Load(id); ok {
		return p.(*recordPlan)
	}
	var schema map[string]any
	var plan *recordPlan
	if json.Unmarshal([]byte(c.Schema()), &schema) == nil {
		plan, _ = newChangePlan(schema)
	}
	actual, _ := s.plans.LoadOrStore(id, plan)
	return actual.(*recordPlan)
}

// changeByPlan decodes a ProductChange body with plan into ch, as
// changeFromNative would from the map goavro decodes it to.
//
// Every string of the change is a piece of one copy of body, made when the
// first is decoded, and the typed fields point into one array of their
// values: a change's strings cost two allocations, not one or two each. A
// piece keeps the whole copy alive, which is little more than its raw
// JSON, the largest field and the one a state keeps pieces of anyway.
func changeByPlan(plan *recordPlan, body []byte, ch *Change) ([]byte, error) {
	var whole string
	text := func(b []byte) string {
		// textFromBinary hands out b as a piece of the buffer it reads,
		// a piece of body: cap tells where it starts.
		off := cap(body) - cap(b)
		if len(b) == 0 || off < 0 || off+len(b) > len(body) || &body[off] != &b[0] {
			return string(b)
		}
		if whole == "" {
			whole = string(body)
		}
		return whole[off : off+len(b)]
	}
	var values *[numFields]string
	fields := fieldSink{
		set: func(string, any) {}, // a null: the field stays nil
		text: func(name string, b []byte) {
			if i := fieldIndex(name); i >= 0 {
				if values == nil {
					values = new([numFields]string)
				}
				values[i] = text(b)
				*ch.Fields.ptrs()[i] = &values[i]
			}
		},
	}
	ignore := fieldSink{set: func(string, any) {}, text: func(string, []byte) {}}
	ignore.nested = func(string) fieldSink { return ignore }
	sink := fieldSink{
		set: func(name string, v any) {
			switch name {
			case "deleted":
				ch.Deleted, _ = v.(bool)
			case "received_at":
				ch.ReceivedAt, _ = v.(time.Time)
			case "occurred_at":
				ch.OccurredAt, _ = v.(time.Time)
			case "notice":
				ch.Notice, _ = v.(bool)
			case "collection_ids":
				ch.CollectionIDs = stringsOf(v)
			}
		},
		text: func(name string, b []byte) {
			switch name {
			case "event_id":
				ch.EventID = text(b)
			case "source":
				ch.Source = text(b)
			case "provider":
				ch.Provider = text(b)
			case "namespace":
				ch.Namespace = text(b)
			case "event_type":
				ch.EventType = text(b)
			case "resource":
				ch.Resource = text(b)
			case "product_id":
				ch.ProductID = text(b)
			case "raw":
				ch.Raw = text(b)
			}
		},
		nested: func(name string) fieldSink {
			if name == "fields" {
				return fields
			}
			return ignore
		},
	}
	return plan.decode(body, sink)
}

// fieldIndex is the index in fieldNames of the field with the given Avro
// name, or -1.
func fieldIndex(name string) int {
	for i, r := range fieldNames {
		if r.name == name {
			return i
		}
	}
	return -1
}
