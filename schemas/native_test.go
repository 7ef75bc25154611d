package schemas

import (
	"time"

	"github.com/linkedin/goavro/v2"
)

// The native forms goavro encodes a whole record from: the reference the
// field-by-field encoders are checked against.

func (f Fields) native() map[string]any {
	m := make(map[string]any, 11)
	for i, p := range f.ptrs() {
		m[fieldNames[i].name] = optString(*p)
	}
	return m
}

func (c *Change) native() map[string]any {
	return map[string]any{
		"event_id":       c.EventID,
		"source":         c.Source,
		"provider":       c.Provider,
		"namespace":      c.Namespace,
		"event_type":     c.EventType,
		"resource":       c.Resource,
		"product_id":     c.ProductID,
		"deleted":        c.Deleted,
		"received_at":    c.ReceivedAt,
		"occurred_at":    optTime(c.OccurredAt),
		"fields":         c.Fields.native(),
		"notice":         c.Notice,
		"collection_ids": stringArray(c.CollectionIDs),
		"raw":            c.Raw,
	}
}

func (s *State) native() map[string]any {
	m := s.sharedNative()
	m["product_id"] = s.ProductID
	m["fields"] = s.Fields.native()
	return m
}

func (s *State) resourceNative() map[string]any {
	m := s.sharedNative()
	m["resource"] = s.Resource
	m["id"] = s.ProductID
	m["pos_ids"] = stringArray(s.PosIDs)
	m["product_ids"] = stringArray(s.ProductIDs)
	return m
}

// sharedNative is the native form of the fields a ProductState and a
// ResourceState record share.
func (s *State) sharedNative() map[string]any {
	return map[string]any{
		"namespace":           s.Namespace,
		"source":              s.Source,
		"provider":            s.Provider,
		"raw":                 s.Raw,
		"version":             s.Version,
		"change_count":        s.ChangeCount,
		"last_event_id":       s.LastEventID,
		"updated_at":          s.UpdatedAt,
		"occurred_at":         optTime(s.OccurredAt),
		"collection_ids":      stringArray(s.CollectionIDs),
		"field_times":         times(s.FieldTimes),
		"dedupe_fingerprints": FingerprintsText(s.DedupeFingerprints),
	}
}

func (u *Update) native() map[string]any {
	var st any
	if u.State != nil {
		st = goavro.Union("io.productstream.ProductState", u.State.native())
	}
	return map[string]any{
		"namespace":         u.Namespace,
		"product_id":        u.ProductID,
		"deleted":           u.Deleted,
		"change_count":      u.ChangeCount,
		"version":           u.Version,
		"first_received_at": u.FirstReceivedAt,
		"last_received_at":  u.LastReceivedAt,
		"emitted_at":        u.EmittedAt,
		"state":             st,
	}
}

func optString(s *string) any {
	if s == nil {
		return nil
	}
	return goavro.Union("string", *s)
}

func optTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return goavro.Union("long.timestamp-millis", t)
}

func (e *Event) native() map[string]any {
	return map[string]any{
		"event_id":    e.EventID,
		"source":      e.Source,
		"provider":    e.Provider,
		"namespace":   e.Namespace,
		"event_type":  e.EventType,
		"subject":     e.Subject,
		"received_at": e.ReceivedAt,
		"occurred_at": optTime(e.OccurredAt),
		"raw":         e.Raw,
	}
}
