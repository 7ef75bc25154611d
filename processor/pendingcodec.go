package processor

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/productstream/productstream/schemas"
)

// The pending changelog's values. The changelog is internal to a processor
// group, so its form is ours, not a published schema. Entries are written
// in a compact binary form, marked by a leading pendingBinary byte; entries
// written before it existed are JSON (a pendingValue), which always starts
// with '{' or white space, and are still read, so that an upgraded group
// restores the changelog its predecessors left.
//
// The binary form, after its mark: the entry's flags (bit 0 deleted), its
// deleted-at time (ms), first offset and count as varints, its four times
// (firstSeen, lastSeen, firstRecv, lastRecv), then the state: its strings
// (namespace, resource, id, source, provider, last event id, raw), version
// and change count, its two times, the typed fields (a uvarint bitmap of
// those present, then their values), the three id sets, the field times
// and the dedupe fingerprints, each set a uvarint count and its elements.
// A string is a uvarint length and its bytes; a time is a varint of its
// Unix seconds (math.MinInt64 for the zero time) and, unless zero, a
// uvarint of its nanoseconds; a fingerprint is 8 bytes, big endian.

// pendingBinary marks a changelog value in the binary form.
const pendingBinary = 0x01

// pendingValue is one pending buffer entry in the changelog's former JSON
// form, still read (decodePending).
type pendingValue struct {
	State     schemas.State `json:"state"`
	Deleted   bool          `json:"deleted"`
	DeletedAt int64         `json:"deleted_at,omitempty"`
	First     int64         `json:"first"`
	Count     int           `json:"count"`
	FirstSeen time.Time     `json:"first_seen"`
	LastSeen  time.Time     `json:"last_seen"`
	FirstRecv time.Time     `json:"first_received"`
	LastRecv  time.Time     `json:"last_received"`
}

// errPendingForm is the error of a changelog value in neither form, or
// cut short.
var errPendingForm = errors.New("malformed pending entry")

// encodePending renders e's raw JSON and encodes the key's changelog
// value in the binary form, or in the JSON form (asJSON). Keys are
// distinct, so it may be called concurrently for different keys.
func encodePending(e *entry, pe *pending, asJSON bool) ([]byte, error) {
	e.render()
	if asJSON {
		return json.Marshal(pendingValue{State: e.state, Deleted: e.deleted, DeletedAt: e.deletedAt, First: pe.first, Count: pe.count,
			FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv})
	}
	st := &e.state
	size := 128 + len(st.Raw) + len(st.Namespace) + len(st.ProductID) + len(st.Source) + len(st.Provider) + len(st.LastEventID) +
		8*len(st.DedupeFingerprints) + 24*len(st.FieldTimes)
	b := make([]byte, 0, size)
	b = append(b, pendingBinary)
	var flags uint64
	if e.deleted {
		flags |= 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendVarint(b, e.deletedAt)
	b = binary.AppendVarint(b, pe.first)
	b = binary.AppendVarint(b, int64(pe.count))
	for _, t := range [...]time.Time{pe.firstSeen, pe.lastSeen, pe.firstRecv, pe.lastRecv} {
		b = appendTime(b, t)
	}
	for _, s := range [...]string{st.Namespace, st.Resource, st.ProductID, st.Source, st.Provider, st.LastEventID, st.Raw} {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, st.Version)
	b = binary.AppendVarint(b, st.ChangeCount)
	b = appendTime(b, st.UpdatedAt)
	b = appendTime(b, st.OccurredAt)
	fields := fieldPtrs(&st.Fields)
	var present uint64
	for i, f := range fields {
		if *f != nil {
			present |= 1 << i
		}
	}
	b = binary.AppendUvarint(b, present)
	for _, f := range fields {
		if *f != nil {
			b = appendString(b, **f)
		}
	}
	for _, set := range [...][]string{st.CollectionIDs, st.PosIDs, st.ProductIDs} {
		b = binary.AppendUvarint(b, uint64(len(set)))
		for _, s := range set {
			b = appendString(b, s)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(st.FieldTimes)))
	for k, t := range st.FieldTimes {
		b = appendString(b, k)
		b = binary.AppendVarint(b, t)
	}
	b = binary.AppendUvarint(b, uint64(len(st.DedupeFingerprints)))
	for _, fp := range st.DedupeFingerprints {
		b = binary.BigEndian.AppendUint64(b, uint64(fp))
	}
	return b, nil
}

// decodePending decodes a changelog value that is not a tombstone, in
// either form.
func decodePending(value []byte) (pendingValue, error) {
	if len(value) == 0 || value[0] != pendingBinary {
		var v pendingValue
		if err := json.Unmarshal(value, &v); err != nil {
			return pendingValue{}, fmt.Errorf("%w: %w", errPendingForm, err)
		}
		return v, nil
	}
	d := pendingDecoder{b: value[1:]}
	var v pendingValue
	st := &v.State
	flags := d.uvarint()
	v.Deleted = flags&1 != 0
	v.DeletedAt = d.varint()
	v.First = d.varint()
	v.Count = int(d.varint())
	v.FirstSeen, v.LastSeen, v.FirstRecv, v.LastRecv = d.time(), d.time(), d.time(), d.time()
	for _, s := range [...]*string{&st.Namespace, &st.Resource, &st.ProductID, &st.Source, &st.Provider, &st.LastEventID, &st.Raw} {
		*s = d.string()
	}
	st.Version = d.varint()
	st.ChangeCount = d.varint()
	st.UpdatedAt, st.OccurredAt = d.time(), d.time()
	present := d.uvarint()
	for i, f := range fieldPtrs(&st.Fields) {
		if present&(1<<i) != 0 {
			s := d.string()
			*f = &s
		}
	}
	for _, set := range [...]*[]string{&st.CollectionIDs, &st.PosIDs, &st.ProductIDs} {
		if n := d.count(1); n > 0 {
			*set = make([]string, n)
			for i := range *set {
				(*set)[i] = d.string()
			}
		}
	}
	if n := d.count(2); n > 0 {
		st.FieldTimes = make(map[string]int64, n)
		for range n {
			k := d.string()
			st.FieldTimes[k] = d.varint()
		}
	}
	if n := d.count(8); n > 0 {
		st.DedupeFingerprints = make([]int64, n)
		for i := range st.DedupeFingerprints {
			st.DedupeFingerprints[i] = int64(binary.BigEndian.Uint64(d.bytes(8)))
		}
	}
	if d.err != nil {
		return pendingValue{}, d.err
	}
	if len(d.b) != 0 {
		return pendingValue{}, fmt.Errorf("%w: %d trailing bytes", errPendingForm, len(d.b))
	}
	return v, nil
}

// fieldPtrs are the typed fields in the binary form's order, which never
// changes: a field added to schemas.Fields goes at the end.
func fieldPtrs(f *schemas.Fields) [11]**string {
	return [11]**string{&f.Title, &f.Description, &f.Brand, &f.Price, &f.SalePrice, &f.Currency,
		&f.URL, &f.ImageURL, &f.Availability, &f.SKU, &f.GTIN}
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, math.MinInt64)
	}
	return binary.AppendUvarint(binary.AppendVarint(b, t.Unix()), uint64(t.Nanosecond()))
}

// pendingDecoder reads the binary form; its first error sticks, and every
// later read returns zero values.
type pendingDecoder struct {
	b   []byte
	err error
}

func (d *pendingDecoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: cut short", errPendingForm)
	}
	d.b = nil
}

func (d *pendingDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *pendingDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads the length of a set whose elements take at least min bytes
// each, refusing one longer than what is left.
func (d *pendingDecoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *pendingDecoder) bytes(n int) []byte {
	if n > len(d.b) {
		d.fail()
		return make([]byte, n)
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *pendingDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	return string(d.bytes(int(n)))
}

func (d *pendingDecoder) time() time.Time {
	sec := d.varint()
	if sec == math.MinInt64 || d.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(d.uvarint())).UTC()
}
