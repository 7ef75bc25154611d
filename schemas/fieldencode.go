package schemas

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkedin/goavro/v2"
)

// Encoding a record field by field, the counterpart of fielddecode.go.
// goavro encodes a record from a map[string]any, with a map for each union
// value too, and looks every field up in it by name: building and reading
// those maps was most of the cost of encoding a state. A recordEncoder
// encodes the same bytes with goavro codecs compiled for each field's type,
// in the schema's field order (a record's binary encoding is its fields'
// encodings, one after the other), taking each value straight from the Go
// struct. A union of null and one other type is its branch index (a zigzag
// varint) and then, unless null, that type's encoding. Tests check the
// bytes against goavro's encoding of the whole record.
//
// Handing goavro a field's value boxes it in an interface, an allocation
// for every string, time and long. So a field is given by a typed
// accessor where that is its type's only cost: a string (or nullable
// string) is its length as a zigzag varint and then its bytes, and a long
// is a zigzag varint, which is how the union's branch index is written
// too. The other types go through goavro.

// fieldEncoder encodes one field of a T.
type fieldEncoder[T any] struct {
	codec *goavro.Codec // the field's type; for a nullable union, its other branch
	null  int64         // a nullable union's null branch: 0 or 1; -1 for no union
	value func(*T) any  // the field's native value; nil for a union's null
	// text, optText and long, instead of codec and value, give a string,
	// a nullable string (nil: the union's null) or a long.
	text    func(*T) string
	optText func(*T) *string
	long    func(*T) int64
	// nested encodes a field that is a record of its own, instead of
	// codec and value.
	nested func(buf []byte, x *T) ([]byte, error)
}

// recordEncoder encodes a T as one record schema.
type recordEncoder[T any] struct{ fields []fieldEncoder[T] }

// encode appends x's encoding to buf.
func (re *recordEncoder[T]) encode(buf []byte, x *T) ([]byte, error) {
	var err error
	for i := range re.fields {
		f := &re.fields[i]
		if f.nested != nil {
			if buf, err = f.nested(buf, x); err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case f.text != nil:
			buf = appendText(buf, f.text(x))
			continue
		case f.optText != nil:
			if v := f.optText(x); v != nil {
				buf = appendText(binary.AppendVarint(buf, 1-f.null), *v)
			} else {
				buf = binary.AppendVarint(buf, f.null)
			}
			continue
		case f.long != nil:
			buf = binary.AppendVarint(buf, f.long(x))
			continue
		}
		v := f.value(x)
		if f.null >= 0 {
			if v == nil {
				buf = binary.AppendVarint(buf, f.null)
				continue
			}
			buf = binary.AppendVarint(buf, 1-f.null)
		}
		if buf, err = f.codec.BinaryFromNative(buf, v); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// appendText appends an Avro string: its length in bytes, a zigzag varint,
// and its bytes.
func appendText(buf []byte, s string) []byte {
	return append(binary.AppendVarint(buf, int64(len(s))), s...)
}

// newRecordEncoder plans the record schema whose JSON form is schema for
// a T whose fields values gives by name, each a func(*T) any (its native
// value, for goavro), a func(*T) string (a string field), a
// func(*T) *string (a nullable string field) or a func(*T) int64 (a long
// field); a field that is a record of its own is encoded by nested[name].
// Every field of the schema must be in one of them, and every field in
// them in the schema.
func newRecordEncoder[T any](schema map[string]any, values map[string]any,
	nested map[string]func([]byte, *T) ([]byte, error)) (*recordEncoder[T], error) {
	if schema["type"] != "record" {
		return nil, fmt.Errorf("%v: not a record", schema["name"])
	}
	fields, _ := schema["fields"].([]any)
	re := &recordEncoder[T]{fields: make([]fieldEncoder[T], 0, len(fields))}
	for _, f := range fields {
		field, _ := f.(map[string]any)
		name, _ := field["name"].(string)
		if enc, ok := nested[name]; ok {
			re.fields = append(re.fields, fieldEncoder[T]{null: -1, nested: enc})
			continue
		}
		value, ok := values[name]
		if !ok {
			return nil, fmt.Errorf("%v: no value for field %q", schema["name"], name)
		}
		fe := fieldEncoder[T]{null: -1}
		typ := field["type"]
		if union, ok := typ.([]any); ok {
			switch {
			case len(union) == 2 && union[0] == "null":
				fe.null, typ = 0, union[1]
			case len(union) == 2 && union[1] == "null":
				fe.null, typ = 1, union[0]
			default:
				return nil, fmt.Errorf("%v: field %q is a union of other than null and one type", schema["name"], name)
			}
		}
		wrong := func(want string) error {
			return fmt.Errorf("%v: field %q of type %v given as a %s", schema["name"], name, field["type"], want)
		}
		switch v := value.(type) {
		case func(*T) string:
			if typ != "string" || fe.null >= 0 {
				return nil, wrong("string")
			}
			fe.text = v
		case func(*T) *string:
			if typ != "string" || fe.null < 0 {
				return nil, wrong("nullable string")
			}
			fe.optText = v
		case func(*T) int64:
			if typ != "long" || fe.null >= 0 {
				return nil, wrong("long")
			}
			fe.long = v
		case func(*T) any:
			text, err := json.Marshal(typ)
			if err != nil {
				return nil, fmt.Errorf("%v: field %q: %w", schema["name"], name, err)
			}
			if fe.codec, err = goavro.NewCodecForStandardJSONFull(string(text)); err != nil {
				return nil, fmt.Errorf("%v: field %q: %w", schema["name"], name, err)
			}
			fe.value = v
		default:
			return nil, fmt.Errorf("%v: field %q: an accessor of type %T", schema["name"], name, value)
		}
		re.fields = append(re.fields, fe)
	}
	if len(re.fields) != len(values)+len(nested) {
		return nil, fmt.Errorf("%v: %d fields, but values for %d", schema["name"], len(re.fields), len(values)+len(nested))
	}
	return re, nil
}

// encoders are the record encoders of the current schemas.
type encoders struct {
	change     *recordEncoder[Change]
	state      *recordEncoder[State]  // ProductState
	resource   *recordEncoder[State]  // ResourceState
	updateHead *recordEncoder[Update] // ProductUpdate without its last field, state
	event      *recordEncoder[Event]
}

// plan plans the current schema of every kind.
func (enc *encoders) plan() error {
	schema := func(k Kind) (map[string]any, error) {
		var m map[string]any
		if err := json.Unmarshal([]byte(Current(k)), &m); err != nil {
			return nil, fmt.Errorf("%s schema: %w", k, err)
		}
		return m, nil
	}
	var (
		err error
		sch [numKinds]map[string]any
	)
	for k := range Kind(numKinds) {
		if sch[k], err = schema(k); err != nil {
			return err
		}
	}
	// ProductFields, as nested in ProductChange and ProductState.
	fieldsSchema := func(k Kind) map[string]any {
		for _, f := range sch[k]["fields"].([]any) {
			if f := f.(map[string]any); f["name"] == "fields" {
				m, _ := f["type"].(map[string]any)
				return m
			}
		}
		return nil
	}
	fieldValues := map[string]any{}
	for i, r := range fieldNames {
		fieldValues[r.name] = func(f *Fields) *string { return *f.ptrs()[i] }
	}
	changeFields, err := newRecordEncoder[Fields](fieldsSchema(KindChange), fieldValues, nil)
	if err != nil {
		return err
	}
	stateFields, err := newRecordEncoder[Fields](fieldsSchema(KindState), fieldValues, nil)
	if err != nil {
		return err
	}

	enc.change, err = newRecordEncoder[Change](sch[KindChange], map[string]any{
		"event_id":       func(c *Change) string { return c.EventID },
		"source":         func(c *Change) string { return c.Source },
		"provider":       func(c *Change) string { return c.Provider },
		"namespace":      func(c *Change) string { return c.Namespace },
		"event_type":     func(c *Change) string { return c.EventType },
		"resource":       func(c *Change) string { return c.Resource },
		"product_id":     func(c *Change) string { return c.ProductID },
		"deleted":        func(c *Change) any { return c.Deleted },
		"received_at":    func(c *Change) any { return c.ReceivedAt },
		"occurred_at":    func(c *Change) any { return optionalTime(c.OccurredAt) },
		"notice":         func(c *Change) any { return c.Notice },
		"collection_ids": func(c *Change) any { return stringArray(c.CollectionIDs) },
		"raw":            func(c *Change) string { return c.Raw },
	}, map[string]func([]byte, *Change) ([]byte, error){
		"fields": func(buf []byte, c *Change) ([]byte, error) { return changeFields.encode(buf, &c.Fields) },
	})
	if err != nil {
		return err
	}

	// The fields ProductState and ResourceState share.
	shared := func() map[string]any {
		return map[string]any{
			"namespace":           func(s *State) string { return s.Namespace },
			"source":              func(s *State) string { return s.Source },
			"provider":            func(s *State) string { return s.Provider },
			"raw":                 func(s *State) string { return s.Raw },
			"version":             func(s *State) int64 { return s.Version },
			"change_count":        func(s *State) int64 { return s.ChangeCount },
			"last_event_id":       func(s *State) string { return s.LastEventID },
			"updated_at":          func(s *State) any { return s.UpdatedAt },
			"occurred_at":         func(s *State) any { return optionalTime(s.OccurredAt) },
			"collection_ids":      func(s *State) any { return stringArray(s.CollectionIDs) },
			"field_times":         func(s *State) any { return times(s.FieldTimes) },
			"dedupe_fingerprints": func(s *State) any { return FingerprintsText(s.DedupeFingerprints) },
		}
	}
	product := shared()
	product["product_id"] = func(s *State) string { return s.ProductID }
	enc.state, err = newRecordEncoder[State](sch[KindState], product, map[string]func([]byte, *State) ([]byte, error){
		"fields": func(buf []byte, s *State) ([]byte, error) { return stateFields.encode(buf, &s.Fields) },
	})
	if err != nil {
		return err
	}
	resource := shared()
	resource["resource"] = func(s *State) string { return s.Resource }
	resource["id"] = func(s *State) string { return s.ProductID }
	resource["pos_ids"] = func(s *State) any { return stringArray(s.PosIDs) }
	resource["product_ids"] = func(s *State) any { return stringArray(s.ProductIDs) }
	if enc.resource, err = newRecordEncoder[State](sch[KindResource], resource, nil); err != nil {
		return err
	}

	update := sch[KindUpdate]
	fields, _ := update["fields"].([]any)
	if len(fields) == 0 || fields[len(fields)-1].(map[string]any)["name"] != "state" {
		return fmt.Errorf("ProductUpdate: state must be the last field")
	}
	head := map[string]any{"type": "record", "name": "ProductUpdateHead", "fields": fields[:len(fields)-1]}
	enc.updateHead, err = newRecordEncoder[Update](head, map[string]any{
		"namespace":         func(u *Update) string { return u.Namespace },
		"product_id":        func(u *Update) string { return u.ProductID },
		"deleted":           func(u *Update) any { return u.Deleted },
		"change_count":      func(u *Update) any { return u.ChangeCount },
		"version":           func(u *Update) int64 { return u.Version },
		"first_received_at": func(u *Update) any { return u.FirstReceivedAt },
		"last_received_at":  func(u *Update) any { return u.LastReceivedAt },
		"emitted_at":        func(u *Update) any { return u.EmittedAt },
	}, nil)
	if err != nil {
		return err
	}

	enc.event, err = newRecordEncoder[Event](sch[KindEvent], map[string]any{
		"event_id":    func(e *Event) string { return e.EventID },
		"source":      func(e *Event) string { return e.Source },
		"provider":    func(e *Event) string { return e.Provider },
		"namespace":   func(e *Event) string { return e.Namespace },
		"event_type":  func(e *Event) string { return e.EventType },
		"subject":     func(e *Event) string { return e.Subject },
		"received_at": func(e *Event) any { return e.ReceivedAt },
		"occurred_at": func(e *Event) any { return optionalTime(e.OccurredAt) },
		"raw":         func(e *Event) string { return e.Raw },
	}, nil)
	if err != nil {
		return err
	}
	return nil
}

// optionalTime is a nullable time's native value: nil for the zero time.
func optionalTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
