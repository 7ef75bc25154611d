package processor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// delivery is the change an ingest replica writes for a delivery with
// event id id that sets key's title, received now.
func delivery(key, id, title string) schemas.Change {
	return schemas.Change{EventID: id, Source: "sw", Provider: "standardwebhooks", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: key, ReceivedAt: time.Now(), Fields: schemas.Fields{Title: str(title)},
		Raw: fmt.Sprintf(`{"id":%q,"title":%q}`, key, title)}
}

// retry writes ch again, as the replica that the sender's retry reached
// does: the same event id and body, received later.
func (e *env) retry(ch schemas.Change) *kgo.Record {
	e.t.Helper()
	ch.ReceivedAt = time.Now()
	return e.produce(ch)
}

// startAssignedWith is startAssigned with cfg.
func (e *env) startAssignedWith(cfg Config) (stop func()) {
	e.t.Helper()
	p, stop := e.run(cfg)
	e.waitAssigned(p, 3)
	e.waitFetching()
	return stop
}

func (e *env) duplicates() int { return int(testutil.ToFloat64(e.metrics.changesDuplicate)) }

// Regression (several ingest replicas): a delivery written to changes
// twice, once by each replica the sender reached, is merged and counted
// once, in the state and in its one update; another event id merges; and
// a late retry after it rolls nothing back.
func TestRetryFromAnotherReplicaIsMergedOnce(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const quiet = 500 * time.Millisecond
		e.startAssignedWith(Config{QuietPeriod: quiet, MaxDelay: 10 * time.Second, DedupeEventIDs: 16})
		d1 := delivery("p", "msg-1", "one")
		e.produce(d1)
		time.Sleep(50 * time.Millisecond)
		e.retry(d1)
		ups := e.updates(e.read(e.names.Updates, 1, time.Minute))
		if len(ups) != 1 || ups[0].ChangeCount != 1 || ups[0].State == nil || ups[0].State.ChangeCount != 1 || !ups[0].LastReceivedAt.Equal(ups[0].FirstReceivedAt) {
			t.Fatalf("a delivery written twice: want one update of 1 change over a state of 1, got %+v state %+v", ups, ups[0].State)
		}
		if got := e.duplicates(); got != 1 {
			t.Fatalf("changes_total{outcome=duplicate} = %d, want 1", got)
		}

		e.produce(delivery("p", "msg-2", "two"))
		e.retry(d1) // late: after another change of the key
		ups = e.updates(e.read(e.names.Updates, 3, time.Minute))
		if len(ups) != 2 || ups[1].ChangeCount != 1 || ups[1].State.ChangeCount != 2 || *ups[1].State.Fields.Title != "two" {
			t.Fatalf("want a second update of msg-2 alone (state of 2 changes, title two), got %d updates, last %+v state %+v", len(ups), ups[len(ups)-1], ups[len(ups)-1].State)
		}
		if got := e.duplicates(); got != 2 {
			t.Fatalf("changes_total{outcome=duplicate} = %d, want 2", got)
		}
	})
}

// A product deleted and created again keeps its memory: a late retry of
// a change from before the delete does not roll the new product back.
func TestDedupeMemoryOutlivesDelete(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.startAssignedWith(Config{QuietPeriod: 100 * time.Millisecond, MaxDelay: time.Second, DedupeEventIDs: 16})
		old := delivery("p", "msg-1", "old")
		deleted := delivery("p", "msg-2", "")
		deleted.Deleted, deleted.Fields, deleted.Raw = true, schemas.Fields{}, `{"id":"p"}`
		e.produce(old)
		e.produce(deleted)
		e.produce(delivery("p", "msg-3", "new"))
		e.retry(old)
		ups := e.updates(e.read(e.names.Updates, 3, 10*time.Second))
		last := ups[len(ups)-1]
		if last.State == nil || *last.State.Fields.Title != "new" || last.State.ChangeCount != 1 || e.duplicates() != 1 {
			t.Fatalf("after old, delete, new and old's retry: want the new product (1 change) and 1 duplicate, got %+v state %+v, %d", last, last.State, e.duplicates())
		}
	})
}

// The memory is bounded: with room for 3, a retry of any of the last 3
// changes applied is skipped, and a retry of an older one is merged again
// (and is then remembered itself).
func TestDedupeMemoryIsBounded(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.startAssignedWith(Config{QuietPeriod: 100 * time.Millisecond, MaxDelay: time.Second, DedupeEventIDs: 3})
		ch := map[string]schemas.Change{}
		for _, id := range []string{"a", "b", "c", "d"} {
			ch[id] = delivery("p", "msg-"+id, id)
			e.produce(ch[id])
		}
		// Remembered now: b, c, d. The retries of d and c are skipped; a's
		// merges again (remembered: c, d, a), and so does b's (d, a, b);
		// a's second is skipped.
		for _, id := range []string{"d", "c", "a", "b", "a"} {
			e.retry(ch[id])
		}
		ups := e.updates(e.read(e.names.Updates, 7, 10*time.Second))
		total := 0
		for _, u := range ups {
			total += int(u.ChangeCount)
		}
		last := ups[len(ups)-1].State
		if total != 6 || last.ChangeCount != 6 || *last.Fields.Title != "b" {
			t.Fatalf("updates count %d changes, state %d with title %s; want 6, 6 and b (4 deliveries, 2 retries of evicted ones)", total, last.ChangeCount, *last.Fields.Title)
		}
		want := []int64{fingerprint(ptr(ch["d"])), fingerprint(ptr(ch["a"])), fingerprint(ptr(ch["b"]))}
		if !slices.Equal(last.DedupeFingerprints, want) {
			t.Fatalf("state remembers %v, want d, a, b: %v", last.DedupeFingerprints, want)
		}
		if got := e.duplicates(); got != 3 {
			t.Fatalf("changes_total{outcome=duplicate} = %d, want 3", got)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// Off (0), the processor remembers nothing and merges every copy.
func TestDedupeOff(t *testing.T) {
	virtualTest(t, false, func(t *testing.T, e *env) {
		e.startAssignedWith(Config{QuietPeriod: 100 * time.Millisecond, MaxDelay: time.Second})
		d := delivery("p", "msg-1", "one")
		e.produce(d)
		e.retry(d)
		ups := e.updates(e.read(e.names.Updates, 1, 10*time.Second))
		if len(ups) != 1 || ups[0].ChangeCount != 2 || ups[0].State.DedupeFingerprints != nil || e.duplicates() != 0 {
			t.Fatalf("with dedupe off: want one update of 2 changes and no memory, got %+v state %+v", ups, ups[0].State)
		}
	})
}

// After a restart the memory is restored with the state, from the state
// topic and from a tombstone: retries that another replica wrote while the
// processor was down are skipped, a delete's included.
func TestDedupeMemorySurvivesRestart(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		cfg := Config{QuietPeriod: 200 * time.Millisecond, MaxDelay: time.Second, DedupeEventIDs: 16}
		stop := e.startAssignedWith(cfg)
		d1 := delivery("p", "msg-1", "one")
		created := delivery("gone", "msg-g1", "doomed")
		deleted := delivery("gone", "msg-g2", "")
		deleted.Deleted, deleted.Fields, deleted.Raw = true, schemas.Fields{}, `{"id":"gone"}`
		e.produce(d1)
		e.produce(created)
		time.Sleep(time.Second)
		e.produce(deleted)
		if ups := e.read(e.names.Updates, 3, time.Minute); len(ups) != 3 {
			t.Fatalf("first run: %d updates, want 3", len(ups))
		}
		stop()

		e.retry(d1)
		e.retry(deleted)
		e.startAssignedWith(cfg)
		e.produce(delivery("p", "msg-2", "two"))
		ups := e.updates(e.read(e.names.Updates, 5, time.Minute))
		if len(ups) != 4 {
			t.Fatalf("%d updates, want 4: one more, for msg-2 alone", len(ups))
		}
		if u := ups[3]; u.ProductID != "p" || u.ChangeCount != 1 || u.State.ChangeCount != 2 || *u.State.Fields.Title != "two" {
			t.Fatalf("update after the restart: %+v state %+v, want p's of msg-2 alone over a state of 2", u, u.State)
		}
		if got := e.duplicates(); got != 2 {
			t.Fatalf("changes_total{outcome=duplicate} = %d, want 2 (msg-1 and the delete)", got)
		}
	})
}

// Exactly once, a processor that stops mid quiet period leaves its memory
// in the pending changelog: the retry that lands meanwhile is skipped by
// the next one, and the key's one update counts the delivery once.
func TestDedupeMemorySurvivesInPendingBuffer(t *testing.T) {
	virtualTest(t, true, func(t *testing.T, e *env) {
		cfg := Config{QuietPeriod: 3 * time.Second, MaxDelay: 20 * time.Second, DedupeEventIDs: 16}
		stop := e.startAssignedWith(cfg)
		d1 := delivery("p", "msg-1", "one")
		e.produce(d1)
		time.Sleep(500 * time.Millisecond) // in the changelog, not yet due
		stop()
		if got := e.read(e.names.Updates, 1, time.Second); len(got) != 0 {
			t.Fatalf("a stop flushed the buffer early: %d updates", len(got))
		}
		e.retry(d1)
		e.startAssignedWith(cfg)
		ups := e.updates(e.read(e.names.Updates, 2, time.Minute))
		if len(ups) != 1 || ups[0].ChangeCount != 1 || ups[0].State.ChangeCount != 1 {
			t.Fatalf("want one update of 1 change over a state of 1, got %+v", ups)
		}
		if got := e.duplicates(); got != 1 {
			t.Fatalf("changes_total{outcome=duplicate} = %d, want 1", got)
		}
	})
}

// An event id that is a hash of the body (a LiSA delivery's) names no
// delivery: a price going 10, 12, 10 sends the first body twice, for real.
// Only a repeat of the last change applied is a retry; the real repeat is
// merged, and the state ends at 10.
func TestBodyHashIDRepeatsOnlyTheLast(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.startAssignedWith(Config{QuietPeriod: 100 * time.Millisecond, MaxDelay: time.Second, DedupeEventIDs: 16})
		lisa := func(price string) schemas.Change {
			body := fmt.Sprintf(`{"productId":"l","price":%s}`, price)
			sum := sha256.Sum256([]byte("lisa-main\x00" + body))
			return schemas.Change{EventID: "sha256:" + hex.EncodeToString(sum[:])[:32], Source: "lisa-main", Provider: "lisa",
				Namespace: "ns", EventType: "product.updated", Resource: "product", ProductID: "l", ReceivedAt: time.Now(),
				Fields: schemas.Fields{Price: str(price)}, Raw: body}
		}
		ten, twelve := lisa("10"), lisa("12")
		e.produce(ten)
		e.retry(ten) // a retry: skipped
		e.produce(twelve)
		e.produce(lisa("10")) // the price back at 10: merged
		ups := e.updates(e.read(e.names.Updates, 2, 10*time.Second))
		total := 0
		for _, u := range ups {
			total += int(u.ChangeCount)
		}
		last := ups[len(ups)-1].State
		if total != 3 || last.ChangeCount != 3 || *last.Fields.Price != "10" || e.duplicates() != 1 {
			t.Fatalf("10, 10 (retry), 12, 10: want 3 changes counted, price 10 and 1 duplicate; got %d, %+v, %d", total, last, e.duplicates())
		}
	})
}

// The fingerprint is the delivery's: the same whoever received it and
// when, another for another event id, source or body. A body posted
// again under a delivery id the signature does not cover is no retry of
// the delivery that really has that id.
func TestFingerprint(t *testing.T) {
	base := delivery("p", "msg-1", "one")
	same := base
	same.ReceivedAt = base.ReceivedAt.Add(time.Minute)
	if fingerprint(&base) != fingerprint(&same) {
		t.Fatal("a retry received later has another fingerprint")
	}
	for name, edit := range map[string]func(*schemas.Change){
		"event id":          func(c *schemas.Change) { c.EventID = "msg-2" },
		"source":            func(c *schemas.Change) { c.Source = "other" },
		"body, same length": func(c *schemas.Change) { c.Raw = `{"id":"p","title":"two"}` },
		"body, longer":      func(c *schemas.Change) { c.Raw += " " },
		"id and source run": func(c *schemas.Change) { c.Source, c.EventID = "swm", "sg-1" },
	} {
		c := base
		edit(&c)
		if fingerprint(&c) == fingerprint(&base) {
			t.Errorf("%s differs, the fingerprint does not", name)
		}
	}
	if fingerprint(&schemas.Change{EventID: "x"})&1 == 0 {
		t.Error("a fingerprint can be 0, the entry of a change without an event id")
	}
}

// remember keeps the last n, oldest first; 0 forgets; a memory restored
// under a larger setting shrinks to the newest n.
func TestRemember(t *testing.T) {
	var st schemas.State
	for fp := range int64(5) {
		remember(&st, fp+1, 3)
	}
	if !slices.Equal(st.DedupeFingerprints, []int64{3, 4, 5}) {
		t.Fatalf("after 1..5 with room for 3: %v", st.DedupeFingerprints)
	}
	remember(&st, 6, 2)
	if !slices.Equal(st.DedupeFingerprints, []int64{5, 6}) {
		t.Fatalf("shrunk to 2, then 6: %v", st.DedupeFingerprints)
	}
	remember(&st, 7, 0)
	if st.DedupeFingerprints != nil {
		t.Fatalf("off: %v, want forgotten", st.DedupeFingerprints)
	}
}

// What ingest gives a delivery without an id of its own is a body hash;
// anything else (a delivery id, Datasembly's per-listing id) is not.
func TestBodyHashID(t *testing.T) {
	for id, want := range map[string]bool{
		"sha256:0123456789abcdef0123456789abcdef":   true,
		"sha256:0123456789abcdef0123456789abcdef#0": false,
		"sha256:0123456789ABCDEF0123456789abcdef":   false,
		"sha256:0123456789abcdef":                   false,
		"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W":           false,
		"derived-0123456789abcdef01234567":          false,
		"sha256:0123456789abcdef0123456789abcdeg":   false,
		"": false,
		"x-sha256:0123456789abcdef0123456789abcdef":  false,
		"sha256:0123456789abcdef0123456789abcdef0":   false,
		"SHA256:0123456789abcdef0123456789abcdef":    false,
		"sha256:0123456789abcdef0123456789abcde\x00": false,
	} {
		if got := bodyHashID(id); got != want {
			t.Errorf("bodyHashID(%q) = %t, want %t", id, got, want)
		}
	}
}

// A tombstone carries the memory in a header, which restore reads back.
func TestTombstoneHeaderRoundTrip(t *testing.T) {
	fps := []int64{-9, 0, 1 << 62}
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: dedupeHeader, Value: []byte(schemas.FingerprintsText(fps))}}}
	if got := headerFingerprints(r); !slices.Equal(got, fps) {
		t.Fatalf("read back %v, want %v", got, fps)
	}
	if got := headerFingerprints(&kgo.Record{Headers: []kgo.RecordHeader{{Key: dedupeHeader, Value: []byte("000000000000000x")}}}); got != nil {
		t.Fatalf("a malformed header read as %v", got)
	}
}
