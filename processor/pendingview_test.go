package processor

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// A changelog value the processor wrote decodes to the entry it held.
func TestPendingViewDecodesWhatTheProcessorWrites(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	title := "Trail shoe"
	e := &entry{state: schemas.State{Namespace: "shop", ProductID: "42", Version: 17, Fields: schemas.Fields{Title: &title},
		FieldTimes: map[string]int64{"fields.title": 1000}, DedupeFingerprints: []int64{-3, 1<<62 + 1}}, deleted: true, deletedAt: t0.UnixMilli()}
	pe := &pending{key: "pshop:42", first: 15, count: 3, firstSeen: t0, lastSeen: t0.Add(time.Second),
		firstRecv: t0.Add(-time.Second), lastRecv: t0.Add(time.Millisecond)}
	v, err := encodePending(e, pe)
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
