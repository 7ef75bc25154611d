package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// A changelog value the processor wrote decodes to the entry it held.
func TestPendingViewDecodesWhatTheProcessorWrites(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	title := "Trail shoe"
	e := &entry{state: schemas.State{Namespace: "shop", ProductID: "42", Version: 17, Fields: schemas.Fields{Title: &title},
		FieldTimes: map[string]int64{"fields.title": 1000}, DedupeFingerprints: []int64{-3, 1<<62 + 1}}, deleted: true, deletedAt: t0.UnixMilli()}
	pe := &pending{key: "pshop:42", first: 15, count: 3, firstSeen: t0, lastSeen: t0.Add(time.Second),
		firstRecv: t0.Add(-time.Second), lastRecv: t0.Add(time.Millisecond)}
	v, err := encodePending(e, pe, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePendingEntry(v)
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Version != 17 || got.State.Key() != "shop:42" || got.State.Fields.Title == nil || *got.State.Fields.Title != title ||
		got.State.FieldTimes["fields.title"] != 1000 || !slices.Equal(got.State.DedupeFingerprints, e.state.DedupeFingerprints) {
		t.Errorf("state %+v", got.State)
	}
	if !got.Deleted || !got.DeletedAt.Equal(t0) || got.FirstOffset != 15 || got.Count != 3 {
		t.Errorf("entry %+v", got)
	}
	if !got.FirstSeen.Equal(pe.firstSeen) || !got.LastSeen.Equal(pe.lastSeen) ||
		!got.FirstReceived.Equal(pe.firstRecv) || !got.LastReceived.Equal(pe.lastRecv) {
		t.Errorf("times %+v", got)
	}
	if _, err := DecodePendingEntry([]byte("not json")); err == nil {
		t.Error("a value that is not JSON decoded")
	}
}

// Due is the deadline the coalescer gives the same arrivals: quiet after
// the last, capped by max delay after the first, at once for a delete.
func TestPendingViewDueMatchesTheCoalescer(t *testing.T) {
	const quiet, maxDelay = 2 * time.Second, 5 * time.Second
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		arrived []time.Duration // after t0
		deleted bool            // the last arrival is a delete
	}{
		{"one change", []time.Duration{0}, false},
		{"a burst that goes quiet", []time.Duration{0, time.Second, 1500 * time.Millisecond}, false},
		{"a burst capped by max delay", []time.Duration{0, 2 * time.Second, 4 * time.Second}, false},
		{"a delete", []time.Duration{0, time.Second}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			co := newCoalescer(quiet, maxDelay)
			var p *pending
			for i, at := range tc.arrived {
				if added := co.add("pk", 0, int64(i), t0, t0.Add(at), tc.deleted && i == len(tc.arrived)-1); added != nil {
					p = added
				}
			}
			want, _ := co.next()
			got := PendingEntry{Deleted: tc.deleted, FirstSeen: p.firstSeen, LastSeen: p.lastSeen}.Due(quiet, maxDelay)
			if !got.Equal(want) {
				t.Errorf("due %s, the coalescer's deadline %s", got.Sub(t0), want.Sub(t0))
			}
		})
	}
}

// PendingKey and PendingPartition find the record the processor writes
// for a key read from a partition of changes.
func TestPendingViewKeyAndPartition(t *testing.T) {
	key, ok := PendingKey("product", "shop:42")
	if !ok || string(key) != internalKey(resourceTags["product"], []byte("shop:42")) {
		t.Errorf("product key %q, %v", key, ok)
	}
	if key, ok := PendingKey("category", "shop:42"); !ok || string(key) != "kshop:42" {
		t.Errorf("category key %q, %v", key, ok)
	}
	if _, ok := PendingKey("warm-up", "shop:42"); ok {
		t.Error("a resource without state has a pending key")
	}
	written := pendingPartitioner{pending: "t.g-pending", byKey: kgo.StickyKeyPartitioner(nil)}.ForTopic("t.g-pending")
	for _, tc := range []struct {
		changes int32
		n       int
	}{{0, 3}, {2, 3}, {5, 6}, {7, 4}} {
		want := int32(written.Partition(&kgo.Record{Topic: "t.g-pending", Key: key, Partition: tc.changes}, tc.n))
		if got := PendingPartition(tc.changes, tc.n); got != want {
			t.Errorf("changes partition %d of %d: %d, written to %d", tc.changes, tc.n, got, want)
		}
	}
}

// pendingFixture is an entry with every part of the changelog value set.
func pendingFixture() (*entry, *pending) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	title, price := "Trail shoe", "19.99"
	e := &entry{state: schemas.State{Namespace: "shop", Resource: "pos", ProductID: "42", Source: "s", Provider: "lisa",
		Fields: schemas.Fields{Title: &title, GTIN: &price}, Raw: `{"a":1}`, Version: 17, ChangeCount: 4, LastEventID: "e4",
		UpdatedAt: t0, OccurredAt: t0.Add(-time.Hour), CollectionIDs: []string{"c1", "c2"}, PosIDs: []string{"p"}, ProductIDs: []string{"x", "y", "z"},
		FieldTimes: map[string]int64{"fields.title": 1000, "raw.a": -5}, DedupeFingerprints: []int64{-3, 1<<62 + 1, 0}},
		deleted: true, deletedAt: t0.UnixMilli()}
	pe := &pending{key: "sshop:42", first: 15, count: 3, firstSeen: t0, lastSeen: t0.Add(time.Second),
		firstRecv: t0.Add(-time.Second), lastRecv: t0.Add(time.Millisecond)}
	return e, pe
}

// The binary changelog value holds every part of the entry, and a value
// cut short anywhere is refused, not read as something else.
func TestPendingBinaryRoundTrip(t *testing.T) {
	// The binary form lists the fields of State and Fields one by one: a
	// field added to either must be added to it (pendingcodec.go).
	if n := reflect.TypeFor[schemas.State]().NumField(); n != 17 {
		t.Fatalf("schemas.State has %d fields, the pending form holds 17", n)
	}
	if n := reflect.TypeFor[schemas.Fields]().NumField(); n != len(fieldPtrs(&schemas.Fields{})) {
		t.Fatalf("schemas.Fields has %d fields, the pending form holds %d", n, len(fieldPtrs(&schemas.Fields{})))
	}
	e, pe := pendingFixture()
	v, err := encodePending(e, pe, false)
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != pendingBinary {
		t.Fatalf("written in the old form: %q", v)
	}
	got, err := decodePending(v)
	if err != nil {
		t.Fatal(err)
	}
	want := pendingValue{State: e.state, Deleted: true, DeletedAt: e.deletedAt, First: 15, Count: 3,
		FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	for n := 1; n < len(v); n++ {
		if _, err := decodePending(v[:n]); !errors.Is(err, errPendingForm) {
			t.Fatalf("value cut to %d of %d bytes: err %v", n, len(v), err)
		}
	}
	if _, err := decodePending(append(v, 0)); !errors.Is(err, errPendingForm) {
		t.Errorf("trailing byte: err %v", err)
	}
}

// Entries that processors wrote in the former JSON form, before an upgrade,
// still decode: for the console and timeline, and when restored.
func TestPendingOldJSONEntriesStillDecode(t *testing.T) {
	e, pe := pendingFixture()
	old, err := json.Marshal(pendingValue{State: e.state, Deleted: true, DeletedAt: e.deletedAt, First: pe.first, Count: pe.count,
		FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv})
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := DecodePendingEntry(old)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := encodePending(e, pe, false)
	fromBinary, err := DecodePendingEntry(v)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromBinary) {
		t.Errorf("old form\n%+v\nnew form\n%+v", fromJSON, fromBinary)
	}
}

// A pending changelog written in the former JSON form before an upgrade is
// restored as the new form is: both entries come back, with their state.
func TestRestoreReadsOldJSONPendingEntries(t *testing.T) {
	e := newEnv(t)
	if err := topics.EnsurePending(context.Background(), kadm.NewClient(e.client), e.names, "g", topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		t.Fatal(err)
	}
	st, pe := pendingFixture()
	st.state.Version = 0 // below the end of changes
	oldForm, err := json.Marshal(pendingValue{State: st.state, Deleted: true, DeletedAt: st.deletedAt, First: pe.first, Count: pe.count,
		FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv})
	if err != nil {
		t.Fatal(err)
	}
	newForm, _ := encodePending(st, pe, false)
	// processor.pending_format: json writes exactly the old form, which
	// members of earlier versions read.
	st.deleted = true
	if asJSON, err := encodePending(st, pe, true); err != nil || !bytes.Equal(asJSON, oldForm) {
		t.Fatalf("the JSON form written now is %s (%v), want the old form %s", asJSON, err, oldForm)
	}
	pendingTopic := e.names.Pending("g")
	recs := []*kgo.Record{
		{Topic: e.names.Changes, Key: []byte("x"), Value: []byte("x"), Partition: 0},
		{Topic: pendingTopic, Key: []byte("sshop:old"), Value: oldForm, Partition: 0},
		{Topic: pendingTopic, Key: []byte("sshop:new"), Value: newForm, Partition: 0},
	}
	cl := e.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "g", QuietPeriod: time.Second,
		MaxDelay: time.Second, Serde: e.serde, Log: e.log, ExactlyOnce: true})
	if err := validate(&cfg); err != nil {
		t.Fatal(err)
	}
	p := newProcessor(cfg)
	r, err := p.restore(context.Background(), []int32{0})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.pending) != 2 {
		t.Fatalf("restored %d pending entries, want 2", len(r.pending))
	}
	for _, key := range []string{"sshop:old", "sshop:new"} {
		got := r.states[0][key]
		if got == nil || !got.deleted || got.deletedAt != st.deletedAt || !reflect.DeepEqual(got.state.DedupeFingerprints, st.state.DedupeFingerprints) ||
			got.state.LastEventID != "e4" || got.state.FieldTimes["raw.a"] != -5 {
			t.Errorf("%s: restored %+v", key, got)
		}
	}
	for _, d := range r.pending {
		if d.first != 15 || d.count != 3 || !d.firstSeen.Equal(pe.firstSeen) || !d.lastRecv.Equal(pe.lastRecv) {
			t.Errorf("%s: pending %+v", d.key, d)
		}
	}
}
