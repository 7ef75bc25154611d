package schemas

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// Fields are the typed product fields productstream understands. A nil field
// was not carried by the notification (or, in a state, never seen).
type Fields struct {
	Title        *string
	Description  *string
	Brand        *string
	Price        *string // exact decimal as sent
	SalePrice    *string // exact decimal as sent
	Currency     *string
	URL          *string
	ImageURL     *string
	Availability *string
	SKU          *string
	GTIN         *string
}

// FieldTimesPrefix prefixes a typed field's Avro name in State.FieldTimes.
const FieldTimesPrefix = "fields."

// fieldNames are the typed fields' Avro names and keys in State.FieldTimes,
// in the order of ptrs; with ptrs, the one place that lists the fields, so
// conversion and merging cannot drift apart.
var fieldNames = [numFields]struct{ name, timeKey string }{
	{"title", FieldTimesPrefix + "title"}, {"description", FieldTimesPrefix + "description"}, {"brand", FieldTimesPrefix + "brand"},
	{"price", FieldTimesPrefix + "price"}, {"sale_price", FieldTimesPrefix + "sale_price"}, {"currency", FieldTimesPrefix + "currency"},
	{"url", FieldTimesPrefix + "url"}, {"image_url", FieldTimesPrefix + "image_url"}, {"availability", FieldTimesPrefix + "availability"},
	{"sku", FieldTimesPrefix + "sku"}, {"gtin", FieldTimesPrefix + "gtin"},
}

// numFields is how many typed fields there are.
const numFields = 11

// ptrs are f's fields, in the order of fieldNames.
func (f *Fields) ptrs() [numFields]**string {
	return [numFields]**string{&f.Title, &f.Description, &f.Brand, &f.Price, &f.SalePrice, &f.Currency, &f.URL, &f.ImageURL,
		&f.Availability, &f.SKU, &f.GTIN}
}

// Overlay sets every field that newer carries; the others keep their value.
func (f *Fields) Overlay(newer Fields) {
	dst, src := f.ptrs(), newer.ptrs()
	for i := range dst {
		if *src[i] != nil {
			*dst[i] = *src[i]
		}
	}
}

// OverlayIf sets each field that newer carries and keep allows, given the
// field's key in State.FieldTimes: FieldTimesPrefix and its Avro name.
func (f *Fields) OverlayIf(newer Fields, keep func(timeKey string) bool) {
	dst, src := f.ptrs(), newer.ptrs()
	for i := range dst {
		if *src[i] != nil && keep(fieldNames[i].timeKey) {
			*dst[i] = *src[i]
		}
	}
}

func fieldsFromNative(v any) (Fields, error) {
	var f Fields
	if v == nil { // written by a schema without typed fields
		return f, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return f, fmt.Errorf("fields: want record, got %T", v)
	}
	for i, p := range f.ptrs() {
		*p = getOptString(m, fieldNames[i].name)
	}
	return f, nil
}

// Change is one normalized change: the value of a ProductChange record.
type Change struct {
	EventID    string
	Source     string
	Provider   string
	Namespace  string
	EventType  string
	Resource   string
	ProductID  string
	Deleted    bool
	ReceivedAt time.Time
	OccurredAt time.Time // zero when the provider did not say
	Fields     Fields
	// Notice marks a notification that names the resource (and the ids in
	// CollectionIDs) but carries none of its data.
	Notice bool
	// CollectionIDs: the collections a product is in, or a POS's snapshot
	// of its visible collections.
	CollectionIDs []string
	Raw           string
}

// Key is the record key of a change and of its product's state and updates.
func (c *Change) Key() string { return Key(c.Namespace, c.ProductID) }

// Key builds a record key "<namespace>:<id>".
func Key(namespace, id string) string { return namespace + ":" + id }

func changeFromNative(v any) (Change, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Change{}, fmt.Errorf("ProductChange: want record, got %T", v)
	}
	f, err := fieldsFromNative(m["fields"])
	if err != nil {
		return Change{}, err
	}
	return Change{
		EventID:       getString(m, "event_id"),
		Source:        getString(m, "source"),
		Provider:      getString(m, "provider"),
		Namespace:     getString(m, "namespace"),
		EventType:     getString(m, "event_type"),
		Resource:      getString(m, "resource"),
		ProductID:     getString(m, "product_id"),
		Deleted:       getBool(m, "deleted"),
		ReceivedAt:    getTime(m, "received_at"),
		OccurredAt:    getOptTime(m, "occurred_at"),
		Fields:        f,
		Notice:        getBool(m, "notice"),
		CollectionIDs: getStrings(m, "collection_ids"),
		Raw:           getString(m, "raw"),
	}, nil
}

// State is the latest known state of one catalog resource: a ProductState
// record for a product, a ResourceState record for anything else.
type State struct {
	Namespace   string
	Resource    string // "" or "product" for a product
	ProductID   string // the resource's id
	Source      string
	Provider    string
	Fields      Fields // products only
	Raw         string
	Version     int64
	ChangeCount int64
	LastEventID string
	UpdatedAt   time.Time
	OccurredAt  time.Time // zero when no applied change said
	// CollectionIDs: a product's collections, or a POS's visible ones.
	CollectionIDs []string
	PosIDs        []string // a collection's POS shops
	ProductIDs    []string // a collection's products
	// FieldTimes holds the occurred time (ms) of each field's value, for
	// the newer-wins merge: "fields.<name>", "raw.<key>", "collection_ids".
	FieldTimes map[string]int64
	// DedupeFingerprints is the processor's memory of the last changes
	// applied, oldest first: a hash of each one's event id and raw (0 for
	// a change without an event id), by which it recognises a retry. A
	// record holds it as FingerprintsText.
	DedupeFingerprints []int64
}

// Key is the record key of the state.
func (s *State) Key() string { return Key(s.Namespace, s.ProductID) }

// IsProduct reports whether the state is a product's.
func (s *State) IsProduct() bool { return s.Resource == "" || s.Resource == "product" }

// stateFromNative reads a ProductState or a ResourceState record.
func stateFromNative(v any) (State, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return State{}, fmt.Errorf("ProductState: want record, got %T", v)
	}
	f, err := fieldsFromNative(m["fields"])
	if err != nil {
		return State{}, err
	}
	st := State{
		Namespace:          getString(m, "namespace"),
		Resource:           getString(m, "resource"),
		ProductID:          getString(m, "product_id"),
		Source:             getString(m, "source"),
		Provider:           getString(m, "provider"),
		Fields:             f,
		Raw:                getString(m, "raw"),
		Version:            getLong(m, "version"),
		ChangeCount:        getLong(m, "change_count"),
		LastEventID:        getString(m, "last_event_id"),
		UpdatedAt:          getTime(m, "updated_at"),
		OccurredAt:         getOptTime(m, "occurred_at"),
		CollectionIDs:      getStrings(m, "collection_ids"),
		PosIDs:             getStrings(m, "pos_ids"),
		ProductIDs:         getStrings(m, "product_ids"),
		FieldTimes:         getTimes(m, "field_times"),
		DedupeFingerprints: ParseFingerprints(getString(m, "dedupe_fingerprints")),
	}
	if _, ok := m["id"]; ok {
		st.ProductID = getString(m, "id")
	}
	return st, nil
}

// Update is one collapsed update: a ProductUpdate record.
type Update struct {
	Namespace       string
	ProductID       string
	Deleted         bool
	ChangeCount     int32
	Version         int64
	FirstReceivedAt time.Time
	LastReceivedAt  time.Time
	EmittedAt       time.Time
	State           *State // nil on delete
}

// Key is the record key of the update.
func (u *Update) Key() string { return Key(u.Namespace, u.ProductID) }

func updateFromNative(v any) (Update, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Update{}, fmt.Errorf("ProductUpdate: want record, got %T", v)
	}
	u := Update{
		Namespace:       getString(m, "namespace"),
		ProductID:       getString(m, "product_id"),
		Deleted:         getBool(m, "deleted"),
		ChangeCount:     int32(getLong(m, "change_count")),
		Version:         getLong(m, "version"),
		FirstReceivedAt: getTime(m, "first_received_at"),
		LastReceivedAt:  getTime(m, "last_received_at"),
		EmittedAt:       getTime(m, "emitted_at"),
	}
	if st := unionValue(m["state"]); st != nil {
		s, err := stateFromNative(st)
		if err != nil {
			return Update{}, err
		}
		u.State = &s
	}
	return u, nil
}

// Native-form helpers. goavro represents a non-null union value as a one-key
// map naming the branch; fields a writer schema lacked are absent and read
// as their zero value.

func unionValue(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, inner := range m {
			return inner
		}
	}
	return nil
}

func getString(m map[string]any, k string) string { s, _ := m[k].(string); return s }
func getBool(m map[string]any, k string) bool     { b, _ := m[k].(bool); return b }

func getLong(m map[string]any, k string) int64 {
	switch n := m[k].(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	}
	return 0
}

func getTime(m map[string]any, k string) time.Time {
	t, _ := m[k].(time.Time)
	return t
}

func getOptString(m map[string]any, k string) *string {
	if s, ok := unionValue(m[k]).(string); ok {
		return &s
	}
	return nil
}

// stringArray is a string slice in native form (an array, never null).
func stringArray(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func getStrings(m map[string]any, k string) []string { return stringsOf(m[k]) }

// stringsOf reads a string array in native form; nil when empty.
func stringsOf(v any) []string {
	arr, _ := v.([]any)
	if len(arr) == 0 {
		return nil
	}
	out := make([]string, 0, len(arr))
	for _, v := range arr {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// FingerprintsText is how a record holds State.DedupeFingerprints: 16
// lowercase hex digits per fingerprint, concatenated. One string, where an
// Avro array would box every element, and safe in any JSON rendering.
func FingerprintsText(fps []int64) string {
	b := make([]byte, 16*len(fps))
	var word [8]byte
	for i, fp := range fps {
		binary.BigEndian.PutUint64(word[:], uint64(fp))
		hex.Encode(b[16*i:], word[:])
	}
	return string(b)
}

// ParseFingerprints reads FingerprintsText; nil for text of another form.
func ParseFingerprints(text string) []int64 {
	if text == "" || len(text)%16 != 0 {
		return nil
	}
	fps := make([]int64, len(text)/16)
	for i := range fps {
		n, err := strconv.ParseUint(text[16*i:16*i+16], 16, 64)
		if err != nil {
			return nil
		}
		fps[i] = int64(n)
	}
	return fps
}

// times is a map of times in native form (never null).
func times(t map[string]int64) map[string]any {
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

func getTimes(m map[string]any, k string) map[string]int64 {
	in, _ := m[k].(map[string]any)
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]int64, len(in))
	for k, v := range in {
		if n, ok := v.(int64); ok {
			out[k] = n
		}
	}
	return out
}

func getOptTime(m map[string]any, k string) time.Time {
	t, _ := unionValue(m[k]).(time.Time)
	return t
}

// Event is an analytics event: the value of an AnalyticsEvent record.
type Event struct {
	EventID    string
	Source     string
	Provider   string
	Namespace  string
	EventType  string
	Subject    string
	ReceivedAt time.Time
	OccurredAt time.Time // zero when the provider did not say
	Raw        string
}

// Key is the record key of the event.
func (e *Event) Key() string { return Key(e.Namespace, e.Subject) }

func eventFromNative(v any) (Event, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Event{}, fmt.Errorf("AnalyticsEvent: want record, got %T", v)
	}
	return Event{
		EventID:    getString(m, "event_id"),
		Source:     getString(m, "source"),
		Provider:   getString(m, "provider"),
		Namespace:  getString(m, "namespace"),
		EventType:  getString(m, "event_type"),
		Subject:    getString(m, "subject"),
		ReceivedAt: getTime(m, "received_at"),
		OccurredAt: getOptTime(m, "occurred_at"),
		Raw:        getString(m, "raw"),
	}, nil
}

// recordOverhead bounds what a record adds to its strings once encoded:
// the wire header, lengths, union branches, longs and booleans.
const recordOverhead = 128

// size is the length of f's strings.
func (f *Fields) size() int {
	n := 0
	for _, p := range f.ptrs() {
		if *p != nil {
			n += len(**p) + 2
		}
	}
	return n
}

// stringsSize is the length of ss, each with the few bytes of its own
// length.
func stringsSize(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + 2
	}
	return n
}

// sizeHint estimates c's encoded size.
func (c *Change) sizeHint() int {
	return recordOverhead + len(c.EventID) + len(c.Source) + len(c.Provider) + len(c.Namespace) + len(c.EventType) +
		len(c.Resource) + len(c.ProductID) + c.Fields.size() + stringsSize(c.CollectionIDs) + len(c.Raw) + 4
}

// sizeHint estimates e's encoded size.
func (e *Event) sizeHint() int {
	return recordOverhead + len(e.EventID) + len(e.Source) + len(e.Provider) + len(e.Namespace) + len(e.EventType) +
		len(e.Subject) + len(e.Raw)
}

// sizeHint estimates s's encoded size, as a state or an update's state.
func (s *State) sizeHint() int {
	n := recordOverhead + len(s.Namespace) + len(s.Resource) + len(s.ProductID) + len(s.Source) + len(s.Provider) +
		s.Fields.size() + len(s.Raw) + 4 + len(s.LastEventID) + stringsSize(s.CollectionIDs) + stringsSize(s.PosIDs) +
		stringsSize(s.ProductIDs) + 10*len(s.DedupeFingerprints)
	for k := range s.FieldTimes {
		n += len(k) + 12
	}
	return n
}
