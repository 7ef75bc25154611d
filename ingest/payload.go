package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// How a verified body's fields are read: the one id reader, the checks the
// HMAC-family providers share, and the configurable payload mapping of the
// hmac and standardwebhooks providers. Every error wraps ErrInvalidPayload
// and names the field.

// Why readID refuses a value; callers put the field's name before them
// ("field productId must be a string or an integer").
var (
	errIDType = errors.New("must be a string or an integer")
	errIDSize = fmt.Errorf("must hold 1 to %d bytes", maxIDLen)
)

// readID reads raw, a present, non-null JSON value, as an id: a string fit
// for a record key (checkID), trimmed, of 1 to maxIDLen bytes, or when
// integers is set an integer number written as it was sent. Its errors are
// errIDType, errIDSize, or checkID's, without the field's name.
func readID(raw json.RawMessage, integers bool) (string, error) {
	s, plain := plainString(raw)
	if !plain && json.Unmarshal(raw, &s) != nil {
		if _, err := strconv.ParseInt(string(raw), 10, 64); !integers || err != nil {
			return "", errIDType
		}
		s = string(raw)
	}
	if err := checkID(raw, s); err != nil {
		return "", err
	}
	if s = strings.TrimSpace(s); s == "" || len(s) > maxIDLen {
		return "", errIDSize
	}
	return s, nil
}

// idField reads raw, the value of the field called name in errors, as an
// id (a string or an integer; see readID). A nil raw is an absent field.
// Errors read "missing field <name>" or "field <name> <why>".
func idField(name string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", fmt.Errorf("%w: missing field %s", ErrInvalidPayload, name)
	}
	id, err := readID(raw, true)
	if err != nil {
		return "", fmt.Errorf("%w: field %s %w", ErrInvalidPayload, name, err)
	}
	return id, nil
}

// id returns the value of key as an id (see idField).
func (o object) id(key string) (string, error) { return idField(key, o[key]) }

// Payload checks shared by the HMAC-family providers (datasembly.go,
// iimmpact.go, aicommerce.go). Their errors use Datasembly's wording
// ("missing field timestamp", "invalid field id: ..."); at locates the
// field inside a batch (" (listings[1])") and is empty for a top-level
// field.

func fieldMissing(name, at string) error {
	return fmt.Errorf("%w: missing field %s%s", ErrInvalidPayload, name, at)
}

func fieldInvalid(name, at, why string) error {
	return fmt.Errorf("%w: invalid field %s%s: %s", ErrInvalidPayload, name, at, why)
}

// isNull reports whether a field is absent (nil) or JSON null.
func isNull(raw json.RawMessage) bool {
	return raw == nil || string(bytes.TrimSpace(raw)) == "null"
}

// needString returns o[key] as sent: a string that is not blank.
func needString(o object, key, at string) (string, error) {
	raw := o[key]
	if isNull(raw) {
		return "", fieldMissing(key, at)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || strings.TrimSpace(s) == "" {
		return "", fieldInvalid(key, at, "must be a non-empty string")
	}
	return s, nil
}

// needTime returns o[key] as an RFC 3339 time (ISO 8601 with a zone), in UTC.
func needTime(o object, key, at string) (time.Time, error) {
	raw := o[key]
	if isNull(raw) {
		return time.Time{}, fieldMissing(key, at)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fieldInvalid(key, at, "must be an RFC 3339 time")
}

// needNumber returns o[key], which must be a JSON number (not a quoted one)
// within float64's range.
func needNumber(o object, key, at string) (float64, error) {
	raw := bytes.TrimSpace(o[key])
	if isNull(raw) {
		return 0, fieldMissing(key, at)
	}
	if c := raw[0]; c == '-' || c >= '0' && c <= '9' {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err == nil {
			if f, err := strconv.ParseFloat(n.String(), 64); err == nil {
				return f, nil
			}
		}
	}
	return 0, fieldInvalid(key, at, "must be a number")
}

// idCandidate is one place an id may be: o[key], called name in errors.
type idCandidate struct {
	o         object
	key, name string
}

// firstID returns the first of fields that is present and not null, as an
// id (see readID; integers says whether an integer is one). A present
// field that is no id is an error naming it; found is false when none is
// present.
func firstID(integers bool, fields ...idCandidate) (id string, found bool, err error) {
	for _, f := range fields {
		raw := f.o[f.key]
		if isNull(raw) {
			continue
		}
		id, err := readID(raw, integers)
		switch {
		case errors.Is(err, errIDType), errors.Is(err, errIDSize):
			what := "string"
			if integers {
				what = "string or an integer"
			}
			err = fieldInvalid(f.name, "", fmt.Sprintf("must be a non-empty %s of at most %d bytes", what, maxIDLen))
		case err != nil:
			err = fieldInvalid(f.name, "", err.Error())
		}
		return id, true, err
	}
	return "", false, nil
}

// payloadMapping is a compiled config.Payload: where the configurable
// providers (hmac, standardwebhooks) find a change's product id and event
// type.
type payloadMapping struct {
	id          jsonPointer
	typ         jsonPointer // nil when the type is not read from the body
	typeHeader  string
	deleteTypes []string
	resource    string
}

// compilePayload compiles p; at names it in errors ("options.payload", or
// the deprecated "payload").
func compilePayload(p *config.Payload, at string) (*payloadMapping, error) {
	field := func(key string) string { return at + "." + key }
	if p == nil {
		return nil, badField(at, "is required (at least %s)", field("id_pointer"))
	}
	m := &payloadMapping{typeHeader: p.TypeHeader, deleteTypes: p.DeleteTypes, resource: p.Resource}
	if p.IDPointer == "" {
		return nil, badField(field("id_pointer"), "is required, e.g. /id")
	}
	var err error
	if m.id, err = parseJSONPointer(p.IDPointer); err != nil {
		return nil, badField(field("id_pointer"), "%v", err)
	}
	if len(m.id) == 0 {
		return nil, badField(field("id_pointer"), "must point into the body, e.g. /id")
	}
	if p.TypePointer != "" {
		if m.typ, err = parseJSONPointer(p.TypePointer); err != nil {
			return nil, badField(field("type_pointer"), "%v", err)
		}
		if len(m.typ) == 0 {
			return nil, badField(field("type_pointer"), "must point into the body, e.g. /type")
		}
		if p.TypeHeader != "" {
			return nil, badField(field("type_header"), "set %s or %s, not both", field("type_pointer"), field("type_header"))
		}
	}
	if p.TypeHeader != "" && !validHeaderName(p.TypeHeader) {
		return nil, badField(field("type_header"), "%q is not a valid header name", p.TypeHeader)
	}
	for k, t := range p.DeleteTypes {
		if t == "" {
			return nil, badField(fmt.Sprintf("%s[%d]", field("delete_types"), k), "is empty")
		}
	}
	if m.resource == "" {
		m.resource = "product"
	}
	return m, nil
}

// change normalizes a verified JSON object body into one change. The id
// is a string or an integer at the id pointer; the event type is the
// string at the type pointer or the type header's value ("updated" when
// absent), and a delete type makes the change a deletion. Typed fields are
// read by their common names from the object holding the id (the top
// level for "/id"), the time from there or else from the top level.
func (m *payloadMapping) change(src origin, req *Request, provider, eventID string) (schemas.Change, error) {
	top, err := parseObject(req.Body, src.maxDepth)
	if err != nil {
		return schemas.Change{}, err
	}
	// The id's holder: the top level for "/id", else the value its parent
	// pointer names. An object holder also gives the typed fields; an
	// array holder ("/ids/0") gives the id only.
	holder, holderRaw := top, json.RawMessage(nil)
	if len(m.id) > 1 {
		holder = nil
		if raw, ok := m.id.parent().lookup(req.Body); ok {
			holderRaw = raw
			if err := json.Unmarshal(raw, &holder); err != nil {
				holder = nil
			}
		}
	}
	id, err := m.productID(holder, holderRaw)
	if err != nil {
		return schemas.Change{}, err
	}
	typ, err := m.eventType(req)
	if err != nil {
		return schemas.Change{}, err
	}
	if holder == nil {
		holder = top
	}
	timeKeys := []string{"updated_at", "updatedAt", "timestamp"}
	occurred := holder.time(timeKeys...)
	if occurred.IsZero() {
		occurred = top.time(timeKeys...)
	}
	return schemas.Change{
		EventID:    eventID,
		Source:     src.name,
		Provider:   provider,
		Namespace:  src.namespace,
		EventType:  typ,
		Resource:   m.resource,
		ProductID:  id,
		Deleted:    slices.Contains(m.deleteTypes, typ),
		ReceivedAt: req.Received,
		OccurredAt: occurred,
		Fields: schemas.Fields{
			Title:        holder.text("title", "name"),
			Description:  holder.text("description"),
			Brand:        holder.text("brand", "vendor"),
			Price:        holder.decimal("price"),
			SalePrice:    holder.decimal("sale_price", "salePrice"),
			Currency:     holder.text("currency"),
			URL:          holder.text("url", "link"),
			ImageURL:     holder.text("image_url", "imageUrl", "image"),
			Availability: holder.availability("availability", "in_stock", "inStock"),
			SKU:          holder.text("sku"),
			GTIN:         holder.text("gtin", "ean", "barcode"),
		},
		Raw: bodyText(req.Body),
	}, nil
}

// productID is the id at the id pointer, found in its holder (an object,
// or else the raw array), read by idField, whose errors name the pointer
// ("missing field /id").
func (m *payloadMapping) productID(holder object, holderRaw json.RawMessage) (string, error) {
	last := m.id[len(m.id)-1]
	var raw json.RawMessage
	if holder != nil {
		raw = holder[last]
	} else if holderRaw != nil {
		raw, _ = pointerChild(holderRaw, last)
	}
	return idField(m.id.String(), raw)
}

func (m *payloadMapping) eventType(req *Request) (string, error) {
	var typ string
	switch {
	case m.typeHeader != "":
		typ = req.Header.Get(m.typeHeader)
		if err := checkHeaderValue(m.typeHeader, typ); err != nil {
			return "", err
		}
	case m.typ != nil:
		raw, ok := m.typ.lookup(req.Body)
		if ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &typ); err != nil {
				return "", fmt.Errorf("%w: field %s must be a string", ErrInvalidPayload, m.typ)
			}
			if len(typ) > maxIDLen {
				return "", fmt.Errorf("%w: field %s is longer than %d bytes", ErrInvalidPayload, m.typ, maxIDLen)
			}
		}
	}
	if typ == "" {
		typ = "updated"
	}
	return typ, nil
}

// checkHeaderValue refuses a header value that cannot travel in a record
// as an id or an event type: over maxIDLen bytes, not UTF-8, or holding a
// control character (checkID).
func checkHeaderValue(header, v string) error {
	if len(v) > maxIDLen || !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s must be UTF-8 of at most %d bytes", ErrInvalidPayload, header, maxIDLen)
	}
	if err := checkID(nil, v); err != nil {
		return fmt.Errorf("%w: %s %w", ErrInvalidPayload, header, err)
	}
	return nil
}
