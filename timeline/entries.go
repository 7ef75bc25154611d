package timeline

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/processor"
	"github.com/productstream/productstream/schemas"
)

// Headers the records carry: ingest's and the processor's on changes, the
// processor's on states (a tombstone's version and delete time).
const (
	eventIDHeader   = "event-id"
	sourceHeader    = "source"
	versionHeader   = "version"
	deletedAtHeader = "deleted-at"
)

// change is what a record of the changes topic says.
func (r *Reader) change(ctx context.Context, rec *kgo.Record) Change {
	c := Change{Offset: rec.Offset, Time: rec.Timestamp, EventID: header(rec, eventIDHeader), Source: header(rec, sourceHeader), Fields: []string{}}
	ch, err := r.serde.DecodeChange(ctx, rec.Value)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.Op, c.EventType, c.Notice = OpUpsert, ch.EventType, ch.Notice
	if ch.Deleted {
		c.Op = OpDelete
	}
	if !ch.Deleted && !ch.Notice { // what the processor merges
		c.Fields = fieldNames(ch.Fields, ch.Raw)
	}
	c.JSON, err = r.serde.DecodeJSON(ctx, rec.Value)
	if err != nil {
		c.Error = err.Error()
	}
	return c
}

// state is what a record of the products topic says: a tombstone is a
// deleted product, its version in its header.
func (r *Reader) state(ctx context.Context, rec *kgo.Record) *State {
	s := &State{Offset: rec.Offset, Time: rec.Timestamp, Fields: []string{}}
	if rec.Value == nil {
		s.Deleted = true
		s.Version, _ = strconv.ParseInt(header(rec, versionHeader), 10, 64)
		if ms, err := strconv.ParseInt(header(rec, deletedAtHeader), 10, 64); err == nil && ms != 0 {
			s.DeletedAt = time.UnixMilli(ms)
		}
		return s
	}
	st, err := r.serde.DecodeState(ctx, rec.Value)
	if err != nil {
		s.Version, _ = strconv.ParseInt(header(rec, versionHeader), 10, 64)
		s.Error = err.Error()
		return s
	}
	s.Version, s.Fields = st.Version, fieldNames(st.Fields, st.Raw)
	if len(st.FieldTimes) > 0 {
		s.FieldTimes = make(map[string]time.Time, len(st.FieldTimes))
		for name, ms := range st.FieldTimes {
			s.FieldTimes[name] = time.UnixMilli(ms)
		}
	}
	if s.JSON, err = r.serde.DecodeJSON(ctx, rec.Value); err != nil {
		s.Error = err.Error()
	}
	return s
}

// update is what a record of the updates topic says.
func (r *Reader) update(ctx context.Context, rec *kgo.Record) Update {
	u := Update{Offset: rec.Offset, Time: rec.Timestamp, Fields: []string{}}
	up, err := r.serde.DecodeUpdate(ctx, rec.Value)
	if err != nil {
		u.Error = err.Error()
		return u
	}
	u.Version, u.Deleted, u.ChangeCount = up.Version, up.Deleted, up.ChangeCount
	if up.State != nil {
		u.Fields = fieldNames(up.State.Fields, up.State.Raw)
	}
	if u.JSON, err = r.serde.DecodeJSON(ctx, rec.Value); err != nil {
		u.Error = err.Error()
	}
	return u
}

// pending is what a pending changelog entry says (not a tombstone).
func (r *Reader) pending(rec *kgo.Record) *Pending {
	p := &Pending{Offset: rec.Offset, Time: rec.Timestamp, Fields: []string{}, JSON: bytes.Clone(rec.Value)}
	e, err := processor.DecodePendingEntry(rec.Value)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.FirstSeen, p.LastSeen, p.FirstOffset, p.Count = e.FirstSeen, e.LastSeen, e.FirstOffset, e.Count
	p.FirstReceived, p.LastReceived = e.FirstReceived, e.LastReceived
	p.Version, p.Deleted, p.Fields = e.State.Version, e.Deleted, fieldNames(e.State.Fields, e.State.Raw)
	if r.cfg.maxDelay > 0 {
		p.Due = e.Due(r.cfg.quiet, r.cfg.maxDelay)
	}
	return p
}

// fieldNames names the fields typed and raw hold as the processor's field
// times do: "fields.<name>" for each typed field with a value, in the
// schema's order, then "raw.<key>" for each top-level member of the JSON
// object raw, in the order written, or "raw" when raw is something else.
func fieldNames(typed schemas.Fields, raw string) []string {
	names := []string{}
	var none schemas.Fields
	none.OverlayIf(typed, func(timeKey string) bool { // called with each field typed carries
		names = append(names, timeKey)
		return false
	})
	if raw == "" {
		return names
	}
	if obj := gjson.Parse(raw); gjson.Valid(raw) && obj.IsObject() {
		obj.ForEach(func(k, _ gjson.Result) bool {
			names = append(names, "raw."+k.String())
			return true
		})
		return names
	}
	return append(names, "raw")
}

// header is the value of rec's last header named key, "" if none.
func header(rec *kgo.Record, key string) string {
	v := ""
	for _, h := range rec.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}
