package processor

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

var tOcc = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func occ(sec int) time.Time { return tOcc.Add(time.Duration(sec) * time.Second) }

// applyAll applies changes in log order (offsets 0, 1, ...), as consume
// does, and returns the entry and the derived changes.
func applyAll(t *testing.T, changes ...schemas.Change) (*entry, []schemas.Change) {
	t.Helper()
	var e *entry
	var derived []schemas.Change
	for i := range changes {
		ch := &changes[i]
		if ch.Namespace == "" {
			ch.Namespace, ch.ProductID = "ns", "p1"
		}
		if stale(e, ch) {
			continue
		}
		e = apply(e, ch, nil, int64(i), func(d schemas.Change) { derived = append(derived, d) })
	}
	e.render()
	return e, derived
}

// Field by field, the newer occurred time wins whatever the log order; a
// tie goes to the later change; a change that does not say when it
// occurred is ordered by the log.
func TestMergeNewerOccurredTimeWins(t *testing.T) {
	e, _ := applyAll(t,
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("ten"), Price: str("10")}, Raw: `{"title":"ten","price":10}`},
		schemas.Change{OccurredAt: occ(5), Fields: schemas.Fields{Title: str("five"), Brand: str("b5")}, Raw: `{"title":"five","brand":"b5"}`},
	)
	if *e.state.Fields.Title != "ten" || *e.state.Fields.Price != "10" || *e.state.Fields.Brand != "b5" {
		t.Fatalf("older title must not override a newer one, a new field must land: %+v", e.state.Fields)
	}
	if e.state.Raw != `{"brand":"b5","price":10,"title":"ten"}` {
		t.Fatalf("raw merged by time: %s", e.state.Raw)
	}
	if !e.state.OccurredAt.Equal(occ(10)) || e.state.ChangeCount != 2 || e.version != 1 {
		t.Fatalf("times, count, version: %v %d %d", e.state.OccurredAt, e.state.ChangeCount, e.version)
	}

	e, _ = applyAll(t,
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("first")}, Raw: `{"title":"first"}`},
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("second")}, Raw: `{"title":"second"}`},
	)
	if *e.state.Fields.Title != "second" || e.state.Raw != `{"title":"second"}` {
		t.Fatalf("a tie goes to the later change: %s %s", *e.state.Fields.Title, e.state.Raw)
	}

	e, _ = applyAll(t,
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("timed")}, Raw: `{"title":"timed"}`},
		schemas.Change{Fields: schemas.Fields{Title: str("untimed")}, Raw: `{"title":"untimed"}`},
	)
	if *e.state.Fields.Title != "untimed" {
		t.Fatalf("a change without a time is ordered by the log: %s", *e.state.Fields.Title)
	}
}

// A notice marks the product changed with the latest times and leaves its
// fields alone.
func TestNoticeMarksChangedWithoutFields(t *testing.T) {
	e, _ := applyAll(t,
		schemas.Change{OccurredAt: occ(1), ReceivedAt: occ(2), Fields: schemas.Fields{Title: str("t")}, Raw: `{"title":"t"}`},
		schemas.Change{OccurredAt: occ(7), ReceivedAt: occ(8), Notice: true, EventID: "n", Raw: `{"eventType":"product-changed","data":{"productId":"p1"}}`},
	)
	if *e.state.Fields.Title != "t" || e.state.Raw != `{"title":"t"}` {
		t.Fatalf("a notice must not touch the fields: %+v %s", e.state.Fields, e.state.Raw)
	}
	if !e.state.OccurredAt.Equal(occ(7)) || !e.state.UpdatedAt.Equal(occ(8)) || e.state.ChangeCount != 2 || e.state.LastEventID != "n" || e.version != 1 {
		t.Fatalf("a notice must mark the product changed: %+v", e.state)
	}
}

// A delete older than the newest change applied is stale and ignored; a
// change older than the delete that ended the key does not bring it back,
// a newer one does.
func TestStaleDeletesAndResurrections(t *testing.T) {
	e, _ := applyAll(t,
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("t")}, Raw: `{"title":"t"}`},
		schemas.Change{OccurredAt: occ(5), Deleted: true},
	)
	if e.deleted {
		t.Fatal("a delete older than the state must be ignored")
	}
	e, _ = applyAll(t,
		schemas.Change{OccurredAt: occ(10), Fields: schemas.Fields{Title: str("t")}, Raw: `{"title":"t"}`},
		schemas.Change{OccurredAt: occ(20), Deleted: true},
		schemas.Change{OccurredAt: occ(15), Fields: schemas.Fields{Title: str("late")}, Raw: `{"title":"late"}`},
	)
	if !e.deleted || e.deletedAt != occ(20).UnixMilli() {
		t.Fatalf("a change older than the delete must not resurrect the product: deleted %v", e.deleted)
	}
	e, _ = applyAll(t,
		schemas.Change{OccurredAt: occ(20), Deleted: true},
		schemas.Change{OccurredAt: occ(25), Fields: schemas.Fields{Title: str("back")}, Raw: `{"title":"back"}`},
	)
	if e.deleted || *e.state.Fields.Title != "back" || e.state.ChangeCount != 1 {
		t.Fatalf("a newer change recreates the product from nothing: %+v", e.state)
	}
}

// product-in-collection-changed unions collection ids and derives one
// membership change per collection the product joins; a delete derives
// its removal from each.
func TestProductCollectionsUnion(t *testing.T) {
	e, derived := applyAll(t,
		schemas.Change{Notice: true, EventID: "a", CollectionIDs: []string{"c2", "c1"}},
		schemas.Change{Notice: true, EventID: "b", CollectionIDs: []string{"c3", "c1"}},
	)
	if !slices.Equal(e.state.CollectionIDs, []string{"c1", "c2", "c3"}) {
		t.Fatalf("collection ids: %v", e.state.CollectionIDs)
	}
	if got := summarize(derived); !slices.Equal(got, []string{"c2 collection.product-added p1", "c1 collection.product-added p1", "c3 collection.product-added p1"}) {
		t.Fatalf("derived: %v", got)
	}
	_, derived = applyAll(t,
		schemas.Change{Notice: true, CollectionIDs: []string{"c1", "c2"}},
		schemas.Change{Deleted: true},
	)
	if got := summarize(derived[2:]); !slices.Equal(got, []string{"c1 collection.product-removed p1", "c2 collection.product-removed p1"}) {
		t.Fatalf("derived on delete: %v", got)
	}
}

// A POS snapshot replaces the previous one (unless older) and derives the
// collections it gained and lost.
func TestPosSnapshotDiffs(t *testing.T) {
	pos := func(sec int, ids ...string) schemas.Change {
		return schemas.Change{Namespace: "ns", Resource: "pos", ProductID: "P", Notice: true, OccurredAt: occ(sec), CollectionIDs: ids}
	}
	e, derived := applyAll(t, pos(1, "c1", "c2"), pos(3, "c2", "c3"), pos(2, "c9"))
	if !slices.Equal(e.state.CollectionIDs, []string{"c2", "c3"}) {
		t.Fatalf("an older snapshot must not replace a newer one: %v", e.state.CollectionIDs)
	}
	want := []string{"c1 collection.pos-added P", "c2 collection.pos-added P", "c1 collection.pos-removed P", "c3 collection.pos-added P"}
	if got := summarize(derived); !slices.Equal(got, want) {
		t.Fatalf("derived: %v, want %v", got, want)
	}
	// Each derived change has a stable id, so a replay derives the same.
	_, again := applyAll(t, pos(1, "c1", "c2"), pos(3, "c2", "c3"), pos(2, "c9"))
	for i := range derived {
		if derived[i].EventID != again[i].EventID || derived[i].Key() != "ns:"+derived[i].ProductID {
			t.Fatalf("derived change %d: id %s vs %s, key %s", i, derived[i].EventID, again[i].EventID, derived[i].Key())
		}
	}
}

func summarize(changes []schemas.Change) []string {
	var out []string
	for _, c := range changes {
		var who string
		if _, tail, ok := cutJSON(c.Raw); ok {
			who = tail
		}
		out = append(out, c.ProductID+" "+c.EventType+" "+who)
	}
	return out
}

// cutJSON returns the only member of a one-member JSON object of strings.
func cutJSON(raw string) (string, string, bool) {
	m := map[string]member{}
	if !splitObject(raw, m) || len(m) != 1 {
		return "", "", false
	}
	for k, v := range m {
		return k, v.value[1 : len(v.value)-1], true
	}
	return "", "", false
}

// send produces any change to the changes topic.
func (e *env) send(ch schemas.Change) {
	e.t.Helper()
	if ch.ReceivedAt.IsZero() {
		ch.ReceivedAt = time.Now()
	}
	if ch.EventID == "" {
		ch.EventID = "e-" + ch.Resource + "-" + ch.ProductID + "-" + ch.EventType
	}
	ch.Source, ch.Namespace = "s", "ns"
	e.produce(ch)
}

// latest reads topic until cond holds for its latest record per key (nil
// value: a tombstone), or fails after 15 s.
func (e *env) latest(topic string, cond func(map[string]*kgo.Record) bool) map[string]*kgo.Record {
	e.t.Helper()
	cl := e.reader(topic)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out := map[string]*kgo.Record{}
	for !cond(out) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("%s: condition not met in 15 s; latest: %d keys", topic, len(out))
		}
		fs.EachRecord(func(r *kgo.Record) { out[string(r.Key)] = r })
	}
	return out
}

func (e *env) state(r *kgo.Record) schemas.State {
	e.t.Helper()
	st, err := e.serde.DecodeState(context.Background(), r.Value)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// Categories, options and groups each get their compacted state topic, with
// ResourceState values, versions and tombstones, and no updates; a category
// and a product with the same id stay apart.
func TestResourceStateTopics(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(200*time.Millisecond, time.Second)
		e.send(schemas.Change{Resource: "category", ProductID: "X", EventType: "category.created", OccurredAt: occ(1), Raw: `{"data":{"name":"Mobile"}}`})
		e.send(schemas.Change{Resource: "product", ProductID: "X", EventType: "product.updated", Fields: schemas.Fields{Title: str("prod")}, Raw: `{"title":"prod"}`})
		e.send(schemas.Change{Resource: "option", ProductID: "o1", EventType: "option.created", OccurredAt: occ(1), Raw: `{"data":{"v":1}}`})
		e.send(schemas.Change{Resource: "group", ProductID: "g1", EventType: "group.created", OccurredAt: occ(1), Raw: `{"data":{"v":1}}`})
		cats := e.latest(e.names.Categories, func(m map[string]*kgo.Record) bool { return m["ns:X"] != nil })
		st := e.state(cats["ns:X"])
		if st.Resource != "category" || st.ProductID != "X" || st.Raw != `{"data":{"name":"Mobile"}}` || headerInt(cats["ns:X"], versionHeader, -1) != st.Version {
			t.Fatalf("category state: %+v", st)
		}
		prods := e.latest(e.names.Products, func(m map[string]*kgo.Record) bool { return m["ns:X"] != nil })
		if ps := e.state(prods["ns:X"]); *ps.Fields.Title != "prod" || ps.ChangeCount != 1 {
			t.Fatalf("the product with the category's id: %+v", ps)
		}
		e.latest(e.names.Options, func(m map[string]*kgo.Record) bool { return m["ns:o1"] != nil })
		e.latest(e.names.Groups, func(m map[string]*kgo.Record) bool { return m["ns:g1"] != nil })

		e.send(schemas.Change{Resource: "category", ProductID: "X", EventType: "category.deleted", Deleted: true, OccurredAt: occ(2)})
		cats = e.latest(e.names.Categories, func(m map[string]*kgo.Record) bool { return m["ns:X"] != nil && m["ns:X"].Value == nil })
		if headerInt(cats["ns:X"], deletedAtHeader, 0) != occ(2).UnixMilli() || headerInt(cats["ns:X"], versionHeader, -1) < 0 {
			t.Fatalf("tombstone headers: %v", cats["ns:X"].Headers)
		}
		// Only the product produced an update.
		ups := e.updates(e.read(e.names.Updates, 10, 2*time.Second))
		if len(ups) != 1 || ups[0].ProductID != "X" {
			t.Fatalf("updates: %+v", ups)
		}
	})
}

// Collections: POS snapshots and product-in-collection notices become
// each collection's POS and product sets, through derived changes on the
// changes topic; a collection that leaves its last POS is deleted.
func TestCollectionMembership(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(200*time.Millisecond, time.Second)
		e.send(schemas.Change{Resource: "pos", ProductID: "P", EventType: "pos-collections-changed", Notice: true, OccurredAt: occ(1), CollectionIDs: []string{"c1", "c2"}})
		e.send(schemas.Change{Resource: "product", ProductID: "x", EventType: "product-in-collection-changed", Notice: true, OccurredAt: occ(1), CollectionIDs: []string{"c1"}})
		e.send(schemas.Change{Resource: "collection", ProductID: "c1", EventType: "collection-changed", Notice: true, OccurredAt: occ(1)})
		cols := e.latest(e.names.Collections, func(m map[string]*kgo.Record) bool {
			if m["ns:c1"] == nil || m["ns:c2"] == nil || m["ns:c1"].Value == nil {
				return false
			}
			st := e.state(m["ns:c1"])
			return len(st.ProductIDs) == 1 && len(st.PosIDs) == 1 && st.ChangeCount == 3
		})
		c1, c2 := e.state(cols["ns:c1"]), e.state(cols["ns:c2"])
		if !slices.Equal(c1.PosIDs, []string{"P"}) || !slices.Equal(c1.ProductIDs, []string{"x"}) || !slices.Equal(c2.PosIDs, []string{"P"}) || len(c2.ProductIDs) != 0 {
			t.Fatalf("collections: c1 %+v c2 %+v", c1, c2)
		}
		pos := e.latest(e.names.Pos, func(m map[string]*kgo.Record) bool { return m["ns:P"] != nil })
		if ps := e.state(pos["ns:P"]); !slices.Equal(ps.CollectionIDs, []string{"c1", "c2"}) || ps.Resource != "pos" {
			t.Fatalf("pos: %+v", ps)
		}
		prods := e.latest(e.names.Products, func(m map[string]*kgo.Record) bool { return m["ns:x"] != nil })
		if ps := e.state(prods["ns:x"]); !slices.Equal(ps.CollectionIDs, []string{"c1"}) {
			t.Fatalf("product: %+v", ps)
		}

		// c1 leaves the POS, its last: deleted. A product that joins c2 and
		// is then deleted joins and leaves c2's products.
		e.send(schemas.Change{Resource: "pos", ProductID: "P", EventType: "pos-collections-changed", Notice: true, OccurredAt: occ(2), CollectionIDs: []string{"c2"}})
		e.latest(e.names.Collections, func(m map[string]*kgo.Record) bool { return m["ns:c1"] != nil && m["ns:c1"].Value == nil })
		e.send(schemas.Change{Resource: "product", ProductID: "y", EventType: "product-in-collection-changed", Notice: true, OccurredAt: occ(3), CollectionIDs: []string{"c2"}})
		e.latest(e.names.Collections, func(m map[string]*kgo.Record) bool {
			return m["ns:c2"] != nil && m["ns:c2"].Value != nil && slices.Equal(e.state(m["ns:c2"]).ProductIDs, []string{"y"})
		})
		e.send(schemas.Change{Resource: "product", ProductID: "y", EventType: "product.deleted", Deleted: true, OccurredAt: occ(4)})
		e.latest(e.names.Collections, func(m map[string]*kgo.Record) bool {
			return m["ns:c2"] != nil && m["ns:c2"].Value != nil && len(e.state(m["ns:c2"]).ProductIDs) == 0
		})
	})
}

// Pending changelog records sit on the partition of the changes they
// buffer, though their keys carry a resource tag that hashes elsewhere: a
// restore reads the changelog by the partitions it was assigned.
func TestPendingChangelogIsCoPartitioned(t *testing.T) {
	virtualTest(t, true, func(t *testing.T, e *env) {
		e.start(time.Minute, time.Hour)
		partOf := map[string]int32{}
		for i := range 40 {
			r := e.change(fmt.Sprintf("k%d", i), schemas.Fields{Title: str("t")}, false)
			partOf["p"+string(r.Key)] = r.Partition
		}
		recs := e.read(e.names.Pending("g"), 40, 15*time.Second)
		if len(recs) < 40 {
			t.Fatalf("%d pending records, want 40", len(recs))
		}
		for _, r := range recs {
			if want, ok := partOf[string(r.Key)]; !ok || r.Partition != want {
				t.Fatalf("pending record %q on partition %d, its changes are on %d", r.Key, r.Partition, want)
			}
		}
	})
}
