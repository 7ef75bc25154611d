// Package deliveries is a metadata-only log of what the edge decided about
// every webhook delivery, so that a console sees every ingest replica. A
// Recorder, one of the edge's observers, writes one JSON Record per request
// to a topic; a Feed reads the topic back and keeps the most recent records
// and per-source counts by minute. A Record names the source, route,
// status, outcome, sizes, times and the records written: never a body, a
// header, a signature, a secret or a client's address.
package deliveries

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/productstream/productstream/ingest"
)

// Record is what the edge decided about one delivery, as the topic holds
// it (JSON). Every string a sender could choose is bounded.
type Record struct {
	// Time is when the request arrived (RFC 3339, nanoseconds).
	Time time.Time `json:"time"`
	// Instance names the ingest process that answered ("host:pid").
	Instance string `json:"instance"`
	// Source is the configured source's name; "" when the route named
	// none.
	Source string `json:"source"`
	// Route is the route template ("/webhooks/:name"; "unmatched" for a
	// request to no webhook route).
	Route string `json:"route"`
	// Status is the HTTP status answered.
	Status int `json:"status"`
	// Outcome is accepted, duplicate or refused.
	Outcome ingest.Outcome `json:"outcome"`
	// Reason is why a refused request was refused ("bad_signature", ...);
	// "" otherwise.
	Reason ingest.Reason `json:"reason"`
	// Bytes is the size of the body read; for a request refused before
	// its body was read, its Content-Length (0 when it gave none).
	Bytes int64 `json:"bytes"`
	// ElapsedMS is the time from arrival to answer, in milliseconds.
	ElapsedMS float64 `json:"elapsed_ms"`
	// DeliveryID is the verified delivery's id (at most 200 bytes); ""
	// when it was not verified or has no id.
	DeliveryID string `json:"delivery_id"`
	// Records is how many records the delivery wrote, or stood for when
	// it was a duplicate; Written may list fewer (at most MaxWritten).
	Records int `json:"records"`
	// Written lists the records written, in the order produced: empty
	// for a refusal and for a duplicate.
	Written []Written `json:"written"`
}

// Written is one Kafka record a delivery wrote.
type Written struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Key is the record's key ("<namespace>:<id>").
	Key string `json:"key"`
	// EventID is the event id the record carries.
	EventID string `json:"event_id"`
}

// Bounds of a Record.
const (
	// MaxString bounds every string of a Record, in bytes.
	MaxString = 256
	// MaxWritten bounds the records a Record lists.
	MaxWritten = 100
)

// recordOf is what instance tells of d.
func recordOf(d ingest.Delivery, instance string) Record {
	at := d.At
	if at.IsZero() {
		at = time.Now() // a Delivery not from the edge; a Record always has a time
	}
	r := Record{
		Time:       at.UTC(),
		Instance:   instance,
		Source:     d.Source,
		Route:      d.Route,
		Status:     d.Status,
		Outcome:    d.Outcome,
		Reason:     d.Reason,
		Bytes:      d.Bytes,
		ElapsedMS:  float64(d.Elapsed.Microseconds()) / 1000,
		DeliveryID: d.DeliveryID,
		Records:    d.Records,
		Written:    make([]Written, 0, min(len(d.Written), MaxWritten)),
	}
	for _, w := range d.Written[:min(len(d.Written), MaxWritten)] {
		r.Written = append(r.Written, Written{Topic: w.Topic, Partition: w.Partition, Offset: w.Offset, Key: w.Key, EventID: w.EventID})
	}
	r.bound(MaxWritten)
	return r
}

// bound cuts every string of r to MaxString bytes and its list of records
// written to maxWritten.
func (r *Record) bound(maxWritten int) {
	for _, s := range []*string{&r.Instance, &r.Source, &r.Route, (*string)(&r.Outcome), (*string)(&r.Reason), &r.DeliveryID} {
		*s = truncate(*s, MaxString)
	}
	if len(r.Written) > maxWritten {
		r.Written = slices.Clone(r.Written[:maxWritten])
	}
	for i := range r.Written {
		w := &r.Written[i]
		w.Topic, w.Key, w.EventID = truncate(w.Topic, MaxString), truncate(w.Key, MaxString), truncate(w.EventID, MaxString)
	}
}

// truncate cuts s to at most n bytes, at the start of a rune, copying
// what it keeps so that the longer string can be freed.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n])
}

// appendJSON appends r's JSON to b: byte for byte what encoding/json
// writes for it (the tests compare the two), without reflection. A string
// holding a byte outside printable ASCII, or one that encoding/json
// escapes, is written by encoding/json itself; a time outside years
// 0-9999 is refused, as encoding/json refuses it.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"time":"`...)
	if b, err = r.Time.AppendText(b); err != nil {
		return nil, err
	}
	b = appendString(append(b, `","instance":`...), r.Instance)
	b = appendString(append(b, `,"source":`...), r.Source)
	b = appendString(append(b, `,"route":`...), r.Route)
	b = strconv.AppendInt(append(b, `,"status":`...), int64(r.Status), 10)
	b = appendString(append(b, `,"outcome":`...), string(r.Outcome))
	b = appendString(append(b, `,"reason":`...), string(r.Reason))
	b = strconv.AppendInt(append(b, `,"bytes":`...), r.Bytes, 10)
	if b, err = appendFloat(append(b, `,"elapsed_ms":`...), r.ElapsedMS); err != nil {
		return nil, err
	}
	b = appendString(append(b, `,"delivery_id":`...), r.DeliveryID)
	b = strconv.AppendInt(append(b, `,"records":`...), int64(r.Records), 10)
	b = append(b, `,"written":`...)
	if r.Written == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Written {
			w := &r.Written[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(append(b, `{"topic":`...), w.Topic)
			b = strconv.AppendInt(append(b, `,"partition":`...), int64(w.Partition), 10)
			b = strconv.AppendInt(append(b, `,"offset":`...), w.Offset, 10)
			b = appendString(append(b, `,"key":`...), w.Key)
			b = appendString(append(b, `,"event_id":`...), w.EventID)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string, as encoding/json writes it: as
// it is when it holds printable ASCII only and nothing encoding/json
// escapes ('"', '\\', and '<', '>' and '&' for HTML), else through
// encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// appendFloat appends f as encoding/json writes a float64: the shortest
// decimal form, through encoding/json where that would be exponent form
// or is refused (NaN and infinities).
func appendFloat(b []byte, f float64) ([]byte, error) {
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) || math.IsNaN(f) || math.IsInf(f, 0) {
		q, err := json.Marshal(f)
		if err != nil {
			return nil, err
		}
		return append(b, q...), nil
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64), nil
}
