package timeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/processor"
	"github.com/productstream/productstream/topics"
)

// A key's changes, the state and update the real processor made of them,
// and the change it holds pending, read at one moment, newest first; a
// key on the same partition is not mixed in; once the pending change is
// emitted, its changelog tombstone reads as nothing pending. On virtual
// time (kfake's virtual network), so the quiet period takes none.
func TestReadShowsTheWholePath(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		const (
			key             = "shop:42"
			quiet, maxDelay = 2 * time.Second, 30 * time.Second
		)
		e := newEnvOn(t, serde, new(kfake.VirtualNetwork), 1, 3)
		e.runProcessor(quiet, maxDelay)
		r := e.reader(WithSchedule(quiet, maxDelay))
		other := neighbour(key, 3)

		c1 := e.produce(e.change(key, "e1", time.Time{}, "Trail shoe", `{"color":"red"}`))[0]
		e.produce(e.change(other, "o1", time.Time{}, "Other", `{"x":1}`))
		c2 := e.produce(e.change(key, "e2", time.Time{}, "", `{"size":42}`))[0]
		e.waitRead(r, key, "the update of e1 and e2", func(tl *Timeline) bool { return len(tl.Updates) == 1 })
		e.produce(e.change(other, "o2", time.Time{}, "Other", `{"x":2}`))
		c3 := e.produce(e.change(key, "e3", time.Time{}, "Trail shoe v2", `{"size":43}`))[0]
		tl := e.waitRead(r, key, "e3 pending", func(tl *Timeline) bool { return tl.Pending != nil })

		part := c1.Partition // where the producer's murmur2 put it
		if tl.Partition != part || tl.Scans.Changes.Partition != part || tl.Scans.Products.Partition != part ||
			tl.Scans.Updates.Partition != part || tl.Scans.Pending.Partition != part {
			t.Errorf("partitions %d %+v, want %d", tl.Partition, tl.Scans, part)
		}
		if tl.Truncated {
			t.Errorf("truncated by %v", tl.TruncatedBy)
		}
		var offsets []int64
		for _, c := range tl.Changes {
			offsets = append(offsets, c.Offset)
		}
		if want := []int64{c3.Offset, c2.Offset, c1.Offset}; !slices.Equal(offsets, want) {
			t.Fatalf("change offsets %v, want %v (newest first, the key's only)", offsets, want)
		}
		for i, want := range []struct {
			id     string
			fields []string
		}{
			{"e3", []string{"fields.title", "raw.size"}},
			{"e2", []string{"raw.size"}},
			{"e1", []string{"fields.title", "raw.color"}},
		} {
			c := tl.Changes[i]
			if c.EventID != want.id || c.Source != "src" || c.Op != OpUpsert || c.Error != "" || !slices.Equal(c.Fields, want.fields) {
				t.Errorf("change %d: %+v, want %s setting %v", i, c, want.id, want.fields)
			}
			if got := gjson.GetBytes(c.JSON, "event_id").String(); got != want.id {
				t.Errorf("change %d JSON: event_id %q", i, got)
			}
		}
		merged := []string{"fields.title", "raw.color", "raw.size"}
		if s := tl.State; s == nil || s.Version != c2.Offset || s.Deleted || !slices.Equal(s.Fields, merged) ||
			gjson.GetBytes(s.JSON, "product_id").String() != "42" {
			t.Errorf("state %+v, want version %d with %v", s, c2.Offset, merged)
		}
		if len(tl.Updates) != 1 || tl.Updates[0].Version != c2.Offset || tl.Updates[0].ChangeCount != 2 ||
			!slices.Equal(tl.Updates[0].Fields, merged) {
			t.Errorf("updates %+v, want one of version %d for 2 changes", tl.Updates, c2.Offset)
		}
		p := tl.Pending
		if p.FirstOffset != c3.Offset || p.Count != 1 || p.Version != c3.Offset || p.Deleted || !slices.Equal(p.Fields, merged) || p.Error != "" {
			t.Errorf("pending %+v, want e3 (offset %d) buffered", p, c3.Offset)
		}
		if p.FirstSeen.Before(c3.Timestamp) || p.LastSeen.Before(p.FirstSeen) || !p.Due.Equal(p.LastSeen.Add(quiet)) {
			t.Errorf("pending since %s, last %s, due %s: want since e3 was written (%s), due a quiet period after the last",
				p.FirstSeen, p.LastSeen, p.Due, c3.Timestamp)
		}

		// The commit of a transaction reaches each partition on its own, so
		// one read may see the update before the changelog's tombstone or
		// before the state it goes with.
		tl = e.waitRead(r, key, "the update and state of e3, nothing pending", func(tl *Timeline) bool {
			return len(tl.Updates) == 2 && tl.Pending == nil && tl.State != nil && tl.State.Version == c3.Offset
		})
		if tl.Scans.Pending.Records < 2 {
			t.Errorf("%d changelog records read, want e3's entry and its tombstone", tl.Scans.Pending.Records)
		}
		if tl.Updates[0].Version != c3.Offset || tl.Updates[1].Version != c2.Offset || tl.State.Version != c3.Offset {
			t.Errorf("updates %+v, state %+v: want e3's first", tl.Updates, tl.State)
		}
	})
}

// runProcessor runs a processor of the env's group, in exactly-once mode,
// until the test ends.
func (e *env) runProcessor(quiet, maxDelay time.Duration) {
	e.t.Helper()
	p, err := processor.New(processor.Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: group,
		QuietPeriod: quiet, MaxDelay: maxDelay, Serde: e.serde, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ExactlyOnce: true, MaxPendingKeys: config.DefaultMaxPendingKeys, MaxJSONDepth: config.DefaultMaxJSONDepth, Dialer: e.dial})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("processor: %v", err)
		}
	})
}

// waitRead reads key until cond holds of its timeline, for at most a
// minute.
func (e *env) waitRead(r *Reader, key, what string, cond func(*Timeline) bool) *Timeline {
	e.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		tl := e.read(r, Query{Key: key})
		if cond(tl) {
			return tl
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s after a minute: %+v", what, tl)
		}
	}
}

// The window bounds the changes read: by default the last 24 hours, else
// Since and Until, inclusive. The offsets read start at the window, not
// at the log start. A group without a pending changelog reads as nothing
// pending.
func TestReadWindowBoundsChanges(t *testing.T) {
	e := newEnv(t, 3)
	const key = "shop:7"
	other := neighbour(key, 3)
	now := time.Now().Truncate(time.Millisecond)
	ago := []time.Duration{30 * time.Hour, 3 * time.Hour, 2 * time.Hour, time.Hour, time.Minute}
	var mine []*kgo.Record
	for i, d := range ago {
		mine = append(mine, e.produce(e.change(key, "e"+string(rune('a'+i)), now.Add(-d), "t", `{}`))[0])
		e.produce(e.change(other, "o", now.Add(-d), "t", `{}`))
	}
	ids := func(tl *Timeline) string {
		var s []string
		for _, c := range tl.Changes {
			s = append(s, c.EventID)
		}
		return strings.Join(s, ",")
	}
	r := e.reader()
	for _, tc := range []struct {
		name     string
		q        Query
		want     string
		from, to int64
	}{
		{"the last 24 hours", Query{Key: key}, "ee,ed,ec,eb", mine[1].Offset, mine[4].Offset + 2},
		{"since and until", Query{Key: key, Since: now.Add(-2 * time.Hour), Until: now.Add(-time.Hour)}, "ed,ec", mine[2].Offset, mine[4].Offset},
		{"all of it", Query{Key: key, Since: now.Add(-100 * time.Hour)}, "ee,ed,ec,eb,ea", mine[0].Offset, mine[4].Offset + 2},
		{"nothing", Query{Key: key, Since: now.Add(time.Hour)}, "", mine[4].Offset + 2, mine[4].Offset + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := e.read(r, tc.q)
			if got := ids(tl); got != tc.want {
				t.Errorf("changes %s, want %s", got, tc.want)
			}
			if s := tl.Scans.Changes; s.From != tc.from || s.To != tc.to {
				t.Errorf("read offsets [%d, %d), want [%d, %d)", s.From, s.To, tc.from, tc.to)
			}
			if tl.Pending != nil || !tl.Scans.Pending.Missing || tl.Truncated {
				t.Errorf("pending %+v, scan %+v, truncated %v", tl.Pending, tl.Scans.Pending, tl.Truncated)
			}
		})
	}
	if _, err := r.Read(context.Background(), Query{Key: key, Since: now, Until: now.Add(-time.Second)}); !errors.Is(err, ErrBadWindow) {
		t.Errorf("until before since: %v, want ErrBadWindow", err)
	}
}

// A tombstone on products reads as deleted with the version and delete
// time its headers carry, though a live state of the key is older and
// other keys' states are newer: the search goes backwards in chunks from
// the end and stops at the chunk holding the key's latest record.
func TestReadTombstoneStateIsDeleted(t *testing.T) {
	e := newEnv(t, 3)
	const key, live = "shop:gone", "shop:live"
	other := neighbour(key, 3)
	deletedAt := time.UnixMilli(1_700_000_123_456)
	filler := func(n int) {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: e.names.Products, Key: []byte(other), Value: e.state(other, int64(i), "x").Value}
		}
		e.produce(recs...)
	}
	filler(20_000)
	e.produce(e.state(key, 5, "Old"), e.state(live, 6, "Live"))
	tomb := e.produce(e.tombstone(key, 42, deletedAt))[0]
	filler(10_000)
	end := tomb.Offset + 1 + 10_000

	tl := e.read(e.reader(), Query{Key: key})
	if s := tl.State; s == nil || !s.Deleted || s.Version != 42 || !s.DeletedAt.Equal(deletedAt) || s.Offset != tomb.Offset ||
		s.JSON != nil || len(s.Fields) != 0 {
		t.Fatalf("state %+v, want the tombstone at %d of version 42", s, tomb.Offset)
	}
	// Chunks of 4096 then 8192 offsets below the end; the second holds it.
	if s := tl.Scans.Products; s.From != end-4096-8192 || s.To != end || s.Records != 4096+8192 || s.Truncated != "" {
		t.Errorf("products scan %+v, want [%d, %d) and 12288 records", s, end-4096-8192, end)
	}

	tl = e.read(e.reader(), Query{Key: live})
	if s := tl.State; s == nil || s.Deleted || s.Version != 6 || !slices.Equal(s.Fields, []string{"fields.title", "raw.a"}) ||
		!s.FieldTimes["fields.title"].Equal(time.UnixMilli(1_700_000_000_000)) || gjson.GetBytes(s.JSON, "fields.title").String() != "Live" {
		t.Errorf("live state %+v", s)
	}
}

// The max records bound cuts a window to its newest offsets, and stops
// the search for a state; the Timeline says which topics it cut.
func TestReadMaxRecordsTruncates(t *testing.T) {
	e := newEnv(t, 3)
	const key = "shop:busy"
	other := neighbour(key, 3)
	var last *kgo.Record
	for i := range 150 {
		last = e.produce(e.change(key, "e"+string(rune('0'+i%10)), time.Time{}, "t", `{}`))[0]
		e.produce(e.change(other, "o", time.Time{}, "t", `{}`))
	}
	e.produce(e.state(key, 1, "t"))
	states := make([]*kgo.Record, 200)
	for i := range states {
		states[i] = e.state(other, int64(i), "x")
	}
	e.produce(states...)

	tl := e.read(e.reader(WithMaxRecords(100)), Query{Key: key})
	if !tl.Truncated || !slices.Equal(tl.TruncatedBy, []Bound{BoundMaxRecords}) {
		t.Errorf("truncated %v by %v, want by max records", tl.Truncated, tl.TruncatedBy)
	}
	if s := tl.Scans.Changes; s.Truncated != BoundMaxRecords || s.To-s.From != 100 || s.Records != 100 || s.To != last.Offset+2 {
		t.Errorf("changes scan %+v, want the newest 100 offsets, to %d", s, last.Offset+2)
	}
	if len(tl.Changes) != 50 || tl.Changes[0].Offset != last.Offset {
		t.Fatalf("%d changes %+v; want 50, the newest at %d", len(tl.Changes), tl.Changes, last.Offset)
	}
	if s := tl.Scans.Products; tl.State != nil || s.Truncated != BoundMaxRecords || s.To-s.From != 100 || s.Records > 100 {
		t.Errorf("state %+v, products scan %+v: want none found within 100 offsets", tl.State, s)
	}
	if s := tl.Scans.Updates; s.Truncated != "" {
		t.Errorf("updates scan %+v cut, though empty", s)
	}

	tl = e.read(e.reader(), Query{Key: key})
	if tl.Truncated || len(tl.Changes) != 150 || tl.State == nil {
		t.Errorf("within the default bound: truncated %v, %d changes, state %+v", tl.TruncatedBy, len(tl.Changes), tl.State)
	}
}

// swallowFetches makes the cluster leave every fetch unanswered.
func (e *env) swallowFetches() {
	e.cluster.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		return nil, nil, true
	})
}

// Cancelling ctx ends a read stuck on a fetch at once, with ctx's error.
// On virtual time: "at once" is exact.
func TestReadCancelReturnsPromptly(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, serde, new(kfake.VirtualNetwork), 1, 3)
		const key = "shop:1"
		e.produce(e.change(key, "e1", time.Time{}, "t", `{}`))
		e.swallowFetches()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		tl, err := e.reader().Read(ctx, Query{Key: key})
		if took := time.Since(start); !errors.Is(err, context.Canceled) || tl != nil || took != 200*time.Millisecond {
			t.Errorf("%v and %+v after %s, want context.Canceled after 200ms", err, tl, took)
		}
	})
}

// The time bound ends a read stuck on a fetch with what was read, no
// error, and the topics it cut marked: on virtual time, exactly at the
// default bound.
func TestReadTimeoutTruncates(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, serde, new(kfake.VirtualNetwork), 1, 3)
		const key = "shop:1"
		e.produce(e.change(key, "e1", time.Time{}, "t", `{}`))
		e.swallowFetches()
		start := time.Now()
		tl, err := e.reader().Read(context.Background(), Query{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 10*time.Second {
			t.Errorf("took %s, want the default bound, 10s", took)
		}
		if !tl.Truncated || !slices.Equal(tl.TruncatedBy, []Bound{BoundTimeout}) || tl.Scans.Changes.Truncated != BoundTimeout {
			t.Errorf("truncated %v by %v, changes scan %+v: want changes cut by the timeout", tl.Truncated, tl.TruncatedBy, tl.Scans.Changes)
		}
		// Nothing to fetch: updates and products are empty, the changelog missing.
		for _, s := range []Scan{tl.Scans.Updates, tl.Scans.Products, tl.Scans.Pending} {
			if s.Truncated != "" {
				t.Errorf("scan %+v cut, with nothing to fetch", s)
			}
		}
	})
}

// A key that is not one productstream writes is refused before any
// request; keys at the limits are read.
func TestReadBadKey(t *testing.T) {
	e := newEnv(t, 3)
	r := e.reader()
	for _, tc := range []struct {
		name, key string
	}{
		{"empty", ""},
		{"no colon", "shop42"},
		{"no namespace", ":42"},
		{"no id", "shop:"},
		{"too long", "shop:" + strings.Repeat("x", MaxKeyBytes-4)},
		{"NUL", "shop:4\x002"},
		{"newline", "shop:42\n"},
		{"C1 control", "shop:4\u00852"},
		{"not UTF-8", "shop:\xff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tl, err := r.Read(context.Background(), Query{Key: tc.key}); !errors.Is(err, ErrBadKey) || tl != nil {
				t.Errorf("%q: %v, want ErrBadKey", tc.key, err)
			}
		})
	}
	for _, key := range []string{"shop:" + strings.Repeat("x", MaxKeyBytes-5), "boutique:café", "ns:a:b"} {
		if _, err := r.Read(context.Background(), Query{Key: key}); err != nil {
			t.Errorf("%q: %v", key, err)
		}
	}
}

// A read fetches, and lists offsets of, only the key's partition of each
// topic, as the broker sees the requests, though every partition holds
// records.
func TestReadFetchesOnlyTheKeysPartition(t *testing.T) {
	const parts = 6
	e := newEnv(t, parts)
	e.ensurePending()
	const key = "shop:42"
	pending := e.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer pending.Close()
	want := int32(-1) // the key's partition, as the producer's murmur2 chose it
	for i := range 60 {
		k := key
		if i%10 != 0 {
			k = fmt.Sprintf("shop:k%d", i)
		}
		p := e.produce(e.change(k, "e", time.Time{}, "t", `{}`), e.state(k, 1, "t"),
			&kgo.Record{Topic: e.names.Updates, Key: []byte(k), Value: []byte("not read")})[0].Partition
		if k == key {
			want = p
		}
		pk, _ := processor.PendingKey("product", k)
		if err := pending.ProduceSync(context.Background(), &kgo.Record{Topic: e.names.Pending(group), Key: pk, Partition: p,
			Value: []byte(`{"first":1,"count":1}`)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	details, err := kadm.NewClient(e.cl).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	names := map[[16]byte]string{}
	for name, d := range details {
		names[d.ID] = name
	}

	var (
		mu      sync.Mutex
		fetched = map[string]map[int32]bool{}
		listed  = map[string]map[int32]bool{}
	)
	note := func(into map[string]map[int32]bool, topic string, id [16]byte, part int32) {
		if topic == "" {
			topic = names[id]
		}
		if into[topic] == nil {
			into[topic] = map[int32]bool{}
		}
		into[topic][part] = true
	}
	e.cluster.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, t := range req.(*kmsg.FetchRequest).Topics {
			for _, p := range t.Partitions {
				note(fetched, t.Topic, t.TopicID, p.Partition)
			}
		}
		return nil, nil, false
	})
	e.cluster.ControlKey(kmsg.ListOffsets.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, t := range req.(*kmsg.ListOffsetsRequest).Topics {
			for _, p := range t.Partitions {
				note(listed, t.Topic, [16]byte{}, p.Partition)
			}
		}
		return nil, nil, false
	})

	tl := e.read(e.reader(), Query{Key: key})
	mu.Lock()
	defer mu.Unlock()
	for _, topic := range []string{e.names.Changes, e.names.Products, e.names.Updates, e.names.Pending(group)} {
		for what, seen := range map[string]map[string]map[int32]bool{"fetched": fetched, "listed": listed} {
			if got := seen[topic]; len(got) != 1 || !got[want] {
				t.Errorf("%s %s partitions %v, want only %d", what, topic, got, want)
			}
		}
	}
	if len(fetched) != 4 {
		t.Errorf("fetched topics %v", fetched)
	}
	if len(tl.Changes) != 6 || tl.State == nil || len(tl.Updates) != 6 || tl.Pending == nil {
		t.Errorf("read %d changes, state %v, %d updates, pending %v", len(tl.Changes), tl.State != nil, len(tl.Updates), tl.Pending)
	}
}
