package deliveries

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/ingest"
)

// The Recorder's encoding of a Record is byte for byte encoding/json's,
// whatever its strings, times and durations hold.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	written := []ingest.Written{{Topic: "p.changes", Partition: 2, Offset: 7, Key: "shop:1", EventID: "sha256:ab"},
		{Topic: "p.events", Partition: 0, Offset: 1 << 40, Key: "shop:2", EventID: "e-2"}}
	for _, tc := range []struct {
		name string
		d    ingest.Delivery
	}{
		{"accepted", ingest.Delivery{Source: "lisa-main", Route: "/plugin-notifications/:id/updates", Status: 202, Outcome: ingest.Accepted,
			Records: 1, Elapsed: 1234 * time.Microsecond, At: at, Bytes: 1024, DeliveryID: "sha256:ab", Written: written[:1]}},
		{"two written", ingest.Delivery{Source: "s", Route: "/webhooks/:name", Status: 200, Outcome: ingest.Accepted, Records: 2, At: at, Written: written}},
		{"refused, no source", ingest.Delivery{Route: "unmatched", Status: 404, Outcome: ingest.Refused, Reason: ingest.ReasonNoRoute, At: at}},
		{"duplicate", ingest.Delivery{Source: "s", Route: "/webhooks/:name", Status: 202, Outcome: ingest.Duplicate, Records: 3, At: at, DeliveryID: "d"}},
		{"zone other than UTC", ingest.Delivery{Source: "s", At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))}},
		{"whole second", ingest.Delivery{Source: "s", At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}},
		{"year 9999", ingest.Delivery{Source: "s", At: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"HTML characters", ingest.Delivery{Source: "a<b>&c", DeliveryID: "<script>&amp;</script>", At: at}},
		{"quotes and backslashes", ingest.Delivery{DeliveryID: `say "hi" \ bye`, Written: []ingest.Written{{Key: `k"\`, EventID: `\u0000`}}, At: at}},
		{"control characters", ingest.Delivery{DeliveryID: "a\x00b\nc\td\x1f\x7f", At: at}},
		{"UTF-8", ingest.Delivery{DeliveryID: "prix élevé ✓ 😀", Written: []ingest.Written{{Key: "shop:é"}}, At: at}},
		{"line and paragraph separators", ingest.Delivery{DeliveryID: "a\u2028b\u2029c", At: at}},
		{"invalid UTF-8", ingest.Delivery{DeliveryID: "a\xffb\xc3", Written: []ingest.Written{{EventID: "\xed\xa0\x80"}}, At: at}},
		{"no time", ingest.Delivery{Source: "s"}},
		{"elapsed zero", ingest.Delivery{Source: "s", At: at}},
		{"elapsed 1µs", ingest.Delivery{Source: "s", At: at, Elapsed: time.Microsecond}},
		{"elapsed under 1µs", ingest.Delivery{Source: "s", At: at, Elapsed: 999}},
		{"elapsed long", ingest.Delivery{Source: "s", At: at, Elapsed: 1<<63 - 1}},
		{"negative", ingest.Delivery{Source: "s", At: at, Elapsed: -1500 * time.Microsecond, Status: -1, Bytes: -1, Records: -1,
			Written: []ingest.Written{{Partition: -1, Offset: -1}}}},
		{"long strings", ingest.Delivery{Source: strings.Repeat("s", 300), DeliveryID: strings.Repeat("é", 200), At: at}},
		{"more than MaxWritten", ingest.Delivery{Source: "s", At: at, Records: 150, Written: make([]ingest.Written, 150)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recordOf(tc.d, "host:12")
			checkAppendJSON(t, &r)
		})
	}
	for _, tc := range []struct {
		name string
		r    Record
	}{
		{"nil written", Record{Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}},
		{"elapsed in exponent form", Record{ElapsedMS: 1e-7, Written: []Written{}}},
		{"elapsed huge", Record{ElapsedMS: 1e21}},
		{"elapsed just under exponent form", Record{ElapsedMS: 999999999999999900000}},
		{"elapsed negative zero", Record{ElapsedMS: math.Copysign(0, -1)}},
		{"elapsed NaN", Record{ElapsedMS: math.NaN()}},
		{"elapsed infinite", Record{ElapsedMS: math.Inf(-1)}},
		{"year 10000", Record{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"year before 0", Record{Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"zone offset of 24 hours", Record{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkAppendJSON(t, &tc.r) })
	}
}

// FuzzAppendJSON compares the Recorder's encoding of a Record with
// encoding/json's on arbitrary strings, numbers and times.
func FuzzAppendJSON(f *testing.F) {
	f.Add("lisa-main", "/webhooks/:name", "sha256:ab", "shop:1", int64(1500), int64(1772366400123456789), 0, int64(42))
	f.Add("<&>", "\u2028", "\xff\"\\", "\x00\x7f", int64(-1), int64(0), 3600, int64(-7))
	f.Fuzz(func(t *testing.T, source, route, id, key string, elapsed, unixNano int64, zone int, n int64) {
		r := recordOf(ingest.Delivery{Source: source, Route: route, Status: int(n), Outcome: ingest.Outcome(route), Reason: ingest.Reason(key),
			Records: int(n), Elapsed: time.Duration(elapsed), At: time.Unix(0, unixNano).In(time.FixedZone("z", zone)), Bytes: n, DeliveryID: id,
			Written: []ingest.Written{{Topic: route, Partition: int32(n), Offset: n, Key: key, EventID: id}}}, source+key)
		checkAppendJSON(t, &r)
		r.Time = time.Unix(0, unixNano).In(time.FixedZone("z", zone)) // not in UTC, as recordOf puts it
		r.ElapsedMS = float64(elapsed) / 1e3
		checkAppendJSON(t, &r)
	})
}

// checkAppendJSON fails t unless r.appendJSON writes what encoding/json
// writes, or fails where it fails; it appends to a buffer already holding
// bytes, which it must leave as they were.
func checkAppendJSON(t *testing.T, r *Record) {
	t.Helper()
	want, wantErr := json.Marshal(r)
	got, err := r.appendJSON([]byte("prefix"))
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, encoding/json's %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if !strings.HasPrefix(string(got), "prefix") || string(got[len("prefix"):]) != string(want) {
		t.Fatalf("got  %s\nwant prefix%s", got, want)
	}
}
