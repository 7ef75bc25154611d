package processor

import (
	"encoding/json"

	"github.com/productstream/productstream/schemas"
)

// entry is the in-memory state of one key in an assigned partition.
type entry struct {
	state   schemas.State
	deleted bool // the last applied change was a delete
}

// apply merges a change read at offset into e (nil: the key has no state
// yet) and returns the result. Changes apply in log order: a later change
// overrides the typed fields and the top-level raw keys it carries.
func apply(e *entry, ch *schemas.Change, offset int64) *entry {
	if e == nil || e.deleted {
		e = &entry{state: schemas.State{Namespace: ch.Namespace, ProductID: ch.ProductID}}
	}
	st := &e.state
	st.Version = offset
	st.ChangeCount++
	st.LastEventID = ch.EventID
	st.UpdatedAt = ch.ReceivedAt
	if ch.Deleted {
		e.deleted = true
		return e
	}
	st.Source, st.Provider = ch.Source, ch.Provider
	st.Fields.Overlay(ch.Fields)
	st.Raw = mergeRaw(st.Raw, ch.Raw)
	if !ch.OccurredAt.IsZero() {
		st.OccurredAt = ch.OccurredAt
	}
	return e
}

// mergeRaw overlays the top-level keys of the JSON object newer on older.
// Anything that is not an object replaces what was there.
func mergeRaw(older, newer string) string {
	if older == "" {
		return newer
	}
	var a, b map[string]json.RawMessage
	if json.Unmarshal([]byte(older), &a) != nil || json.Unmarshal([]byte(newer), &b) != nil || a == nil || b == nil {
		return newer
	}
	for k, v := range b {
		a[k] = v
	}
	out, err := json.Marshal(a)
	if err != nil {
		return newer
	}
	return string(out)
}
