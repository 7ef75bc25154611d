package processor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"slices"
	"strings"

	"github.com/productstream/productstream/schemas"
)

// resourceTags give each catalog resource with a state topic the one-byte
// tag that prefixes its keys in memory and in the pending changelog: a
// category and a product may share an id (and so a record key).
var resourceTags = map[string]byte{"product": 'p', "collection": 'c', "category": 'k', "option": 'o', "group": 'g', "pos": 's'}

// internalKey is a key as the processor holds it: the resource's tag, then
// the record key.
func internalKey(tag byte, key []byte) string {
	b := make([]byte, 0, 1+len(key))
	return string(append(append(b, tag), key...))
}

// recordKey is the record key of an internal key.
func recordKey(ikey string) string { return ikey[1:] }

// entry is the in-memory state of one key in an assigned partition. A
// restored entry holds its state record's value (enc) until a change needs
// the state, so that a restore costs no Avro decoding.
type entry struct {
	state     schemas.State
	enc       []byte // the restored ProductState/ResourceState value; nil once decoded
	version   int64  // state.Version, also while enc is undecoded
	deleted   bool   // the last applied change was a delete
	deletedAt int64  // occurred time (ms) of that delete, 0 when it did not say
	// raw is state.Raw split into its top-level members, one per name,
	// sorted by name, kept between changes so that a merge parses only
	// the incoming change; nil while state.Raw is not split (or is no
	// object). rawDirty says state.Raw must be rendered from it again.
	raw      []rawMember
	rawDirty bool
}

// occurredMs is when ch says it occurred, in ms, or 0 when it does not say.
func occurredMs(ch *schemas.Change) int64 {
	if ch.OccurredAt.IsZero() {
		return 0
	}
	return ch.OccurredAt.UnixMilli()
}

// newer reports whether a value that occurred at t replaces one set at
// held: the newer occurred time wins, ties go to the later change in the
// log, and a change that does not say when it occurred (t == 0) is ordered
// by the log alone.
func newer(t, held int64) bool { return t == 0 || t >= held }

// stale reports whether ch is older than what e already reflects, so that
// applying it would undo newer data: a change older than the delete that
// ended the key, or a delete older than the newest change applied.
func stale(e *entry, ch *schemas.Change) bool {
	t := occurredMs(ch)
	switch {
	case e == nil || t == 0:
		return false
	case e.deleted:
		return t < e.deletedAt
	case ch.Deleted:
		return !e.state.OccurredAt.IsZero() && t < e.state.OccurredAt.UnixMilli()
	}
	return false
}

// apply merges a change of the given version into e (nil: the key has no state
// yet) and returns the result, calling derive for each change it implies
// for another key (collection membership). raw is ch.Raw split by
// splitRaw (nil: apply splits it). The caller has decoded e and checked
// that ch is not stale.
//
// Full payloads merge field by field, typed fields and top-level raw keys,
// the newer occurred time winning (see newer). A notice marks the resource
// changed with the latest times and carries no fields. A product's
// collection ids are a union; a POS's are the snapshot of its latest
// notice; a collection's POS and product sets follow the derived changes.
func apply(e *entry, ch *schemas.Change, raw *rawObject, version int64, derive func(schemas.Change)) *entry {
	if e == nil || e.deleted {
		fresh := &entry{state: schemas.State{Namespace: ch.Namespace, Resource: ch.Resource, ProductID: ch.ProductID}}
		if e != nil {
			// A deleted key keeps its delete time and its memory of the
			// changes applied, so a late retry brings nothing back.
			fresh.deletedAt = e.deletedAt
			fresh.state.DedupeFingerprints = e.state.DedupeFingerprints
		}
		e = fresh
	}
	st := &e.state
	t := occurredMs(ch)
	e.version, st.Version = version, version
	st.ChangeCount++
	st.LastEventID = ch.EventID
	st.UpdatedAt = ch.ReceivedAt
	if ch.OccurredAt.After(st.OccurredAt) {
		st.OccurredAt = ch.OccurredAt
	}
	if ch.Deleted {
		for _, c := range st.CollectionIDs {
			if st.IsProduct() {
				derive(membership(ch, c, "collection.product-removed", "productId"))
			} else if st.Resource == "pos" {
				derive(membership(ch, c, "collection.pos-removed", "posId"))
			}
		}
		e.deleted, e.deletedAt = true, t
		return e
	}
	st.Source, st.Provider = ch.Source, ch.Provider
	if !ch.Notice {
		mergeFields(st, ch.Fields, t)
		mergeRaw(e, ch.Raw, raw, t)
	}
	switch ch.Resource {
	case "", "product":
		for _, c := range ch.CollectionIDs {
			if added := addSorted(&st.CollectionIDs, c); added {
				derive(membership(ch, c, "collection.product-added", "productId"))
			}
		}
	case "pos":
		if newer(t, st.FieldTimes["collection_ids"]) {
			snapshot := slices.Sorted(slices.Values(ch.CollectionIDs))
			snapshot = slices.Compact(snapshot)
			for _, c := range st.CollectionIDs {
				if _, found := slices.BinarySearch(snapshot, c); !found {
					derive(membership(ch, c, "collection.pos-removed", "posId"))
				}
			}
			for _, c := range snapshot {
				if _, found := slices.BinarySearch(st.CollectionIDs, c); !found {
					derive(membership(ch, c, "collection.pos-added", "posId"))
				}
			}
			st.CollectionIDs = snapshot
			setTime(st, "collection_ids", t)
		}
	case "collection":
		applyMembership(e, ch)
	}
	return e
}

// applyMembership applies a derived collection change to a collection. A
// collection that leaves the last POS showing it is deleted.
func applyMembership(e *entry, ch *schemas.Change) {
	var m struct {
		PosID     string `json:"posId"`
		ProductID string `json:"productId"`
	}
	st := &e.state
	switch ch.EventType {
	case "collection.pos-added":
		if json.Unmarshal([]byte(ch.Raw), &m) == nil && m.PosID != "" {
			addSorted(&st.PosIDs, m.PosID)
		}
	case "collection.pos-removed":
		if json.Unmarshal([]byte(ch.Raw), &m) == nil && removeSorted(&st.PosIDs, m.PosID) && len(st.PosIDs) == 0 {
			e.deleted, e.deletedAt = true, occurredMs(ch)
		}
	case "collection.product-added":
		if json.Unmarshal([]byte(ch.Raw), &m) == nil && m.ProductID != "" {
			addSorted(&st.ProductIDs, m.ProductID)
		}
	case "collection.product-removed":
		if json.Unmarshal([]byte(ch.Raw), &m) == nil {
			removeSorted(&st.ProductIDs, m.ProductID)
		}
	}
}

// membership is the change that origin implies for collection: event
// (collection.pos-added, ...) with {idField: origin's id} as its raw JSON.
// Its event id is derived from origin's, so a replay derives the same one.
func membership(origin *schemas.Change, collection, event, idField string) schemas.Change {
	raw, _ := json.Marshal(map[string]string{idField: origin.ProductID})
	sum := sha256.Sum256([]byte(origin.EventID + "\x00" + event + "\x00" + collection))
	return schemas.Change{
		EventID:    "derived-" + hex.EncodeToString(sum[:12]),
		Source:     origin.Source,
		Provider:   "productstream",
		Namespace:  origin.Namespace,
		EventType:  event,
		Resource:   "collection",
		ProductID:  collection,
		ReceivedAt: origin.ReceivedAt,
		OccurredAt: origin.OccurredAt,
		Notice:     true,
		Raw:        string(raw),
	}
}

// mergeFields sets each typed field newer carries unless the state holds a
// value that occurred later.
func mergeFields(st *schemas.State, newerFields schemas.Fields, t int64) {
	if t == 0 {
		st.Fields.Overlay(newerFields)
		return
	}
	st.Fields.OverlayIf(newerFields, func(timeKey string) bool {
		if !newer(t, st.FieldTimes[timeKey]) {
			return false
		}
		setTime(st, timeKey, t)
		return true
	})
}

// member is one top-level member of a JSON object: its key as it was
// written (quoted) and its value's JSON text.
type member struct{ key, value string }

// splitObject splits the JSON object text into its members by key, or
// reports false when text is not a valid JSON object. The members slice
// the text without copying it.
func splitObject(text string, into map[string]member) bool {
	raw, _ := splitRaw(text, nil, math.MaxInt)
	if !raw.object {
		return false
	}
	for _, m := range raw.members {
		into[m.name] = m.member
	}
	return true
}

// mergeRaw overlays the top-level members of the JSON object raw (split
// into obj; nil: split here) on the state's, each unless the state's value
// occurred later. Anything that is not an object replaces what was there.
func mergeRaw(e *entry, raw string, obj *rawObject, t int64) {
	st := &e.state
	if e.raw == nil && st.Raw != "" {
		if held, _ := splitRaw(st.Raw, nil, math.MaxInt); held.object {
			e.raw = addMembers(make([]rawMember, 0, len(held.members)), held.members)
		}
	}
	if obj == nil {
		split, _ := splitRaw(raw, nil, math.MaxInt)
		obj = &split
	}
	if !obj.object || (e.raw == nil && st.Raw != "") {
		st.Raw, e.raw, e.rawDirty = raw, nil, false
		return
	}
	if e.raw == nil {
		e.raw = make([]rawMember, 0, len(obj.members))
	}
	// An untimed change replaces every member it carries; a timed one
	// those it wins. A held member keeps its key in the field times, so
	// that only a name new to the key costs making one.
	var added []rawMember
	for _, m := range obj.members {
		i, found := findMember(e.raw, m.name)
		if t != 0 {
			m.timeKey = ""
			if found {
				m.timeKey = e.raw[i].timeKey
			}
			if m.timeKey == "" {
				m.timeKey = "raw." + m.name
			}
			if !newer(t, st.FieldTimes[m.timeKey]) {
				continue
			}
			setTime(st, m.timeKey, t)
		}
		if found {
			e.raw[i] = m
		} else {
			added = append(added, m)
		}
	}
	e.raw = addMembers(e.raw, added)
	e.rawDirty = true
}

// addMembers merges added, whose names held (sorted by name, one member
// per name) lacks, into held and returns it so kept; of one name added
// twice the later stays. The new names are sorted and merged in at once,
// so that a change with many new members costs a sort, not an insertion
// each.
func addMembers(held, added []rawMember) []rawMember {
	if len(added) == 0 {
		return held
	}
	// Stable, so that of one name added twice the last comes last.
	slices.SortStableFunc(added, func(a, b rawMember) int { return strings.Compare(a.name, b.name) })
	last := added[:0]
	for i, m := range added {
		if i+1 < len(added) && added[i+1].name == m.name {
			continue
		}
		last = append(last, m)
	}
	// Merge from the back into held grown by len(last).
	n := len(held)
	held = slices.Grow(held, len(last))[:n+len(last)]
	for i, j, k := n-1, len(last)-1, len(held)-1; j >= 0; k-- {
		if i >= 0 && held[i].name > last[j].name {
			held[k] = held[i]
			i--
		} else {
			held[k] = last[j]
			j--
		}
	}
	return held
}

// findMember returns the index of the member named name in held (sorted by
// name) and whether it is there. Most objects have a few members, which
// are found faster by comparing names for equality than by ordering them.
func findMember(held []rawMember, name string) (int, bool) {
	if len(held) > 16 {
		return slices.BinarySearchFunc(held, name, func(m rawMember, name string) int { return strings.Compare(m.name, name) })
	}
	for i := range held {
		if held[i].name == name {
			return i, true
		}
	}
	return 0, false
}

// render brings state.Raw up to date with the merged members, in key
// order.
func (e *entry) render() {
	if !e.rawDirty {
		return
	}
	size := 2
	for _, m := range e.raw {
		size += len(m.key) + len(m.value) + 2
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteByte('{')
	for i, m := range e.raw {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.key)
		b.WriteByte(':')
		b.WriteString(m.value)
	}
	b.WriteByte('}')
	e.state.Raw = b.String()
	e.rawDirty = false
}

func setTime(st *schemas.State, field string, t int64) {
	if t == 0 {
		return
	}
	if st.FieldTimes == nil {
		st.FieldTimes = map[string]int64{}
	}
	st.FieldTimes[field] = t
}

// addSorted inserts s into the sorted set *set, reporting whether it was new.
func addSorted(set *[]string, s string) bool {
	i, found := slices.BinarySearch(*set, s)
	if found {
		return false
	}
	*set = slices.Insert(*set, i, s)
	return true
}

// removeSorted removes s from the sorted set *set, reporting whether it was there.
func removeSorted(set *[]string, s string) bool {
	i, found := slices.BinarySearch(*set, s)
	if found {
		*set = slices.Delete(*set, i, i+1)
	}
	return found
}
