package deliveries

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/ingest"
)

// Two ingest processes record to one topic; a feed started afterwards is
// ready only once it holds what they wrote, shows both processes, and then
// follows what they write next.
func TestRecordersToFeed(t *testing.T) {
	c := newCluster(t, testTopic)
	recA, clA, _ := newRecorder(t, c.ListenAddrs(), "host-a:1")
	recB, clB, _ := newRecorder(t, c.ListenAddrs(), "host-b:2")
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond).UTC()
	accepted := ingest.Delivery{Source: "lisa-main", Route: "/webhooks/:name", Status: 202, Outcome: ingest.Accepted, Records: 1,
		Elapsed: 1500 * time.Microsecond, At: at, Bytes: 42, DeliveryID: "sha256:ab",
		Written: []ingest.Written{{Topic: "p.changes", Partition: 2, Offset: 7, Key: "shop:1", EventID: "sha256:ab"}}}
	refused := ingest.Delivery{Source: "lisa-main", Route: "/webhooks/:name", Status: 401, Outcome: ingest.Refused,
		Reason: ingest.ReasonBadSignature, Elapsed: time.Millisecond, At: at.Add(time.Second), Bytes: 10}
	recA.Observe(accepted)
	recB.Observe(refused)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cl := range []*kgo.Client{clA, clB} {
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}

	f, err := NewFeed(newClient(t, c.ListenAddrs()), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	if f.Ready() {
		t.Fatal("ready before running")
	}
	// Hold the feed's first fetch: it has planned its read by then, and
	// must not say it is ready before the records are in.
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(arrived)
			c.SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	runFeed(t, f)
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("the feed never fetched")
	}
	if f.Ready() {
		t.Fatal("ready before its first fetch was answered")
	}
	close(release)
	waitFor(t, "the feed to be ready", f.Ready)
	got := f.Recent(Filter{})
	want := []Record{recordOf(refused, "host-b:2"), recordOf(accepted, "host-a:1")}
	if !sameRecords(got, want) {
		t.Fatalf("once ready, recent is\n%+v\nwant\n%+v", got, want)
	}
	if inst := f.Instances(); !slices.Equal(inst, []string{"host-a:1", "host-b:2"}) {
		t.Fatalf("instances %v", inst)
	}

	later := accepted
	later.At, later.DeliveryID = time.Now().UTC(), "sha256:cd"
	recB.Observe(later)
	waitFor(t, "the feed to follow", func() bool { return len(f.Recent(Filter{})) == 3 })
	if got := f.Recent(Filter{Limit: 1}); !sameRecords(got, []Record{recordOf(later, "host-b:2")}) {
		t.Fatalf("newest %+v", got)
	}
	sums := f.Sources([]string{"lisa-main", "quiet"})
	if len(sums) != 2 || sums[0].Name != "lisa-main" || sums[0].Accepted != 2 || sums[0].Refused != 1 ||
		sums[0].RefusedBy[ingest.ReasonBadSignature] != 1 || !sums[0].LastRefused.Equal(refused.At) ||
		sums[1].Name != "quiet" || sums[1].Accepted+sums[1].Refused != 0 || len(sums[1].Minutes) != 15 {
		t.Fatalf("sources %+v", sums)
	}
}

// sameRecords compares records, times by instant.
func sameRecords(a, b []Record) bool {
	return slices.EqualFunc(a, b, func(x, y Record) bool {
		if !x.Time.Equal(y.Time) {
			return false
		}
		x.Time, y.Time = time.Time{}, time.Time{}
		return reflect.DeepEqual(x, y)
	})
}

// Records that are not a Record (not JSON, oversized, without a time or
// an outcome) are skipped and counted; strings and lists of a hostile but
// valid record are cut to their bounds.
func TestFeedSkipsMalformedRecords(t *testing.T) {
	c := newCluster(t, testTopic)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	hostile := Record{Time: time.Now(), Source: strings.Repeat("s", 1000), Outcome: ingest.Refused,
		Reason: ingest.Reason(strings.Repeat("ü", 300)), DeliveryID: strings.Repeat("d", 5000), Records: 500}
	for i := range 500 {
		hostile.Written = append(hostile.Written, Written{Topic: "t", Offset: int64(i), Key: "k"})
	}
	hostileJSON, _ := json.Marshal(hostile)
	values := []string{
		"not json",
		"null",
		"[]",
		`{"outcome":"accepted","source":"no-time"}`,
		`{"time":"yesterday","outcome":"accepted"}`,
		`{"time":"` + now + `","outcome":"exploded"}`,
		`{"time":"` + now + `","outcome":"accepted","source":"` + strings.Repeat("x", maxValue) + `"}`,
		string(hostileJSON),
		`{"time":"` + now + `","outcome":"accepted","source":"fine","status":202}`,
	}
	const malformed = 7
	cl := newClient(t, c.ListenAddrs(), kgo.ProducerBatchMaxBytes(2<<20))
	for _, v := range values {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: testTopic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := NewFeed(newClient(t, c.ListenAddrs(), kgo.FetchMaxBytes(4<<20)), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	runFeed(t, f)
	// Every record taken in, whatever Ready says: on a loaded machine its
	// fallback (5 s without a fetch) can come before the fetch does.
	waitFor(t, "every record to be taken in", func() bool {
		s := f.Stats()
		return s.Malformed+s.Read >= int64(len(values))
	})
	if s := f.Stats(); s.Malformed != malformed || s.Read != int64(len(values)-malformed) {
		t.Fatalf("stats %+v, want %d malformed and %d read", s, malformed, len(values)-malformed)
	}
	var got *Record
	for _, r := range f.Recent(Filter{}) {
		if r.Outcome == ingest.Refused {
			got = &r
		}
	}
	if got == nil || len(got.Source) != MaxString || len(got.DeliveryID) != MaxString || len(got.Reason) > MaxString ||
		!utf8.ValidString(string(got.Reason)) || len(got.Written) != keptWritten || got.Records != 500 {
		t.Fatalf("the hostile record was kept as %+v", got)
	}
}

// The feed keeps only the most recent records.
func TestFeedRingIsBounded(t *testing.T) {
	f := unitFeed(t, time.Now(), WithKeep(5))
	t0 := time.Now()
	for i := range 12 {
		f.add([]Record{{Time: t0.Add(time.Duration(i) * time.Second), Outcome: ingest.Accepted, DeliveryID: fmt.Sprint(i)}})
	}
	if ids := deliveryIDs(f.Recent(Filter{Limit: 100})); !slices.Equal(ids, []string{"11", "10", "9", "8", "7"}) {
		t.Fatalf("kept %v, want the 5 most recent", ids)
	}
	if len(f.ring) != 5 || f.Stats().Read != 12 {
		t.Fatalf("ring of %d, read %d", len(f.ring), f.Stats().Read)
	}
}

// unitFeed is a feed that is never run, on the clock now, for tests that
// add records directly.
func unitFeed(t *testing.T, now time.Time, opts ...FeedOption) *Feed {
	t.Helper()
	f, err := NewFeed(idleClient(t), testTopic, append([]FeedOption{withClock(func() time.Time { return now })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// idleClient is a client of no reachable broker, for feeds that are never
// run.
func idleClient(t *testing.T) *kgo.Client { return newClient(t, []string{"127.0.0.1:1"}) }

func deliveryIDs(rs []Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.DeliveryID
	}
	return out
}

// Filters select by source, outcome, reason, status and time, newest
// first whatever the order read, up to the limit.
func TestFeedFilters(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := unitFeed(t, t0.Add(time.Minute))
	rec := func(id, source string, outcome ingest.Outcome, reason ingest.Reason, status, sec int) Record {
		return Record{DeliveryID: id, Source: source, Outcome: outcome, Reason: reason, Status: status, Time: t0.Add(time.Duration(sec) * time.Second)}
	}
	f.add([]Record{ // r4 is read after r5
		rec("r1", "a", ingest.Accepted, "", 202, 0),
		rec("r2", "a", ingest.Refused, ingest.ReasonBadSignature, 401, 1),
		rec("r3", "b", ingest.Refused, ingest.ReasonTooLarge, 413, 2),
		rec("r5", "a", ingest.Duplicate, "", 202, 4),
		rec("r4", "b", ingest.Accepted, "", 202, 3),
	})
	for _, tc := range []struct {
		name string
		q    Filter
		want []string
	}{
		{"everything", Filter{}, []string{"r5", "r4", "r3", "r2", "r1"}},
		{"source", Filter{Source: "a"}, []string{"r5", "r2", "r1"}},
		{"outcome", Filter{Outcome: "refused"}, []string{"r3", "r2"}},
		{"reason", Filter{Reason: "too_large"}, []string{"r3"}},
		{"status", Filter{Status: 202}, []string{"r5", "r4", "r1"}},
		{"since and until", Filter{Since: t0.Add(time.Second), Until: t0.Add(3 * time.Second)}, []string{"r3", "r2"}},
		{"limit", Filter{Limit: 2}, []string{"r5", "r4"}},
		{"source and outcome", Filter{Source: "b", Outcome: "accepted"}, []string{"r4"}},
		{"nothing", Filter{Source: "c"}, []string{}},
	} {
		if got := deliveryIDs(f.Recent(tc.q)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	many := unitFeed(t, t0, WithKeep(2000))
	for i := range 1500 {
		many.add([]Record{rec(fmt.Sprint(i), "a", ingest.Accepted, "", 202, i)})
	}
	if n, m := len(many.Recent(Filter{})), len(many.Recent(Filter{Limit: 5000})); n != DefaultLimit || m != MaxLimit {
		t.Fatalf("default limit gave %d, a limit of 5000 gave %d; want %d and %d", n, m, DefaultLimit, MaxLimit)
	}
}

// Per-source counts are by minute over the window, by outcome and reason;
// the latest times follow the records, a clock slightly ahead counts in
// its minute when it comes, one far ahead counts nowhere, and minutes
// leave the window as the clock moves.
func TestFeedSourcesByMinute(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 12, 30, 30, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	setNow := func(t time.Time) { mu.Lock(); defer mu.Unlock(); now = t }
	f, err := NewFeed(idleClient(t), testTopic, WithWindow(3*time.Minute), withClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	at := func(hm string) time.Time {
		tm, err := time.Parse("15:04:05", hm)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2026, 3, 1, tm.Hour(), tm.Minute(), tm.Second(), 0, time.UTC)
	}
	rec := func(source string, outcome ingest.Outcome, reason ingest.Reason, hm, instance string) Record {
		return Record{Source: source, Outcome: outcome, Reason: reason, Time: at(hm), Instance: instance}
	}
	f.add([]Record{
		rec("a", ingest.Accepted, "", "12:28:10", "i1"),
		rec("a", ingest.Accepted, "", "12:30:05", "i1"),
		rec("a", ingest.Refused, ingest.ReasonBadSignature, "12:29:59", "i1"),
		rec("a", ingest.Refused, ingest.ReasonTooLarge, "12:30:20", "i1"),
		rec("a", ingest.Duplicate, "", "12:30:21", "i1"),
		rec("a", ingest.Accepted, "", "12:27:59", "i1"),                       // before the window
		rec("a", ingest.Refused, ingest.ReasonUnauthorized, "12:31:20", "i1"), // 50s ahead
		rec("a", ingest.Accepted, "", "12:45:00", "i9"),                       // far ahead
		rec("", ingest.Refused, ingest.ReasonUnknownSource, "12:30:00", "i2"),
	})
	minute := func(hm string, accepted, refused int) Minute {
		return Minute{Start: at(hm), Accepted: accepted, Refused: refused}
	}
	want := []SourceSummary{
		{Name: "", Refused: 1, RefusedBy: map[ingest.Reason]int{ingest.ReasonUnknownSource: 1},
			LastRefused: at("12:30:00"), LastReason: ingest.ReasonUnknownSource,
			Minutes: []Minute{minute("12:28:00", 0, 0), minute("12:29:00", 0, 0), minute("12:30:00", 0, 1)}},
		{Name: "a", Accepted: 2, Duplicate: 1, Refused: 2,
			RefusedBy:    map[ingest.Reason]int{ingest.ReasonBadSignature: 1, ingest.ReasonTooLarge: 1},
			LastAccepted: at("12:30:05"), LastRefused: at("12:31:20"), LastReason: ingest.ReasonUnauthorized,
			Minutes: []Minute{minute("12:28:00", 1, 0), minute("12:29:00", 0, 1), minute("12:30:00", 1, 1)}},
		{Name: "b", RefusedBy: map[ingest.Reason]int{},
			Minutes: []Minute{minute("12:28:00", 0, 0), minute("12:29:00", 0, 0), minute("12:30:00", 0, 0)}},
	}
	if got := f.Sources([]string{"b", "a"}); !reflect.DeepEqual(got, want) {
		t.Fatalf("at 12:30:30\n got %+v\nwant %+v", got, want)
	}
	if got := f.Instances(); !slices.Equal(got, []string{"i1", "i2"}) {
		t.Fatalf("instances at 12:30:30: %v", got)
	}

	setNow(at("12:31:30"))
	a := f.Sources(nil)[1]
	if a.Accepted != 1 || a.Refused != 3 || a.RefusedBy[ingest.ReasonUnauthorized] != 1 ||
		!slices.Equal(a.Minutes, []Minute{minute("12:29:00", 0, 1), minute("12:30:00", 1, 1), minute("12:31:00", 0, 1)}) {
		t.Fatalf("at 12:31:30: %+v", a)
	}

	f.add([]Record{rec("a", ingest.Accepted, "", "12:32:00", "i3")}) // takes the slot 12:28 had
	setNow(at("12:34:10"))
	a = f.Sources(nil)[1]
	if a.Accepted != 1 || a.Refused != 0 || a.Duplicate != 0 ||
		!slices.Equal(a.Minutes, []Minute{minute("12:32:00", 1, 0), minute("12:33:00", 0, 0), minute("12:34:00", 0, 0)}) {
		t.Fatalf("at 12:34:10: %+v", a)
	}
	if got := f.Instances(); !slices.Equal(got, []string{"i1", "i3"}) {
		t.Fatalf("instances at 12:34:10: %v", got)
	}
}

// NewFeed refuses options that cannot work.
func TestNewFeedRefuses(t *testing.T) {
	for name, opts := range map[string][]FeedOption{
		"keep 0":          {WithKeep(0)},
		"window 30s":      {WithWindow(30 * time.Second)},
		"window 90s":      {WithWindow(90 * time.Second)},
		"window negative": {WithWindow(-time.Minute)},
	} {
		if _, err := NewFeed(idleClient(t), testTopic, opts...); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := NewFeed(idleClient(t), ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("no topic: %v, want ErrInvalid", err)
	}
}

// A feed started before its topic exists waits, not ready, and reads the
// topic once it is there.
func TestFeedWaitsForTheTopic(t *testing.T) {
	c := newCluster(t)
	// The client remembers a topic missing for MetadataMinAge (5s).
	f, err := NewFeed(newClient(t, c.ListenAddrs(), kgo.MetadataMinAge(100*time.Millisecond)), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	runFeed(t, f)
	rec, cl, _ := newRecorder(t, c.ListenAddrs(), "h:1")
	admin := newClient(t, c.ListenAddrs())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	time.Sleep(100 * time.Millisecond) // let Run find no topic
	if f.Ready() {
		t.Fatal("ready without a topic")
	}
	if _, err := kadm.NewClient(admin).CreateTopic(ctx, 3, -1, nil, testTopic); err != nil {
		t.Fatal(err)
	}
	rec.Observe(ingest.Delivery{Source: "s", Outcome: ingest.Accepted, At: time.Now()})
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record", func() bool { return len(f.Recent(Filter{})) == 1 })
}

// A feed rides out a broker that drops its fetches, and reads on once the
// broker answers again.
func TestFeedRidesOutFetchFailures(t *testing.T) {
	c := newCluster(t, testTopic)
	rec, cl, _ := newRecorder(t, c.ListenAddrs(), "h:1")
	rec.Observe(ingest.Delivery{Source: "s", Outcome: ingest.Accepted, At: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var dropped atomic.Int32
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if dropped.Load() < 5 {
			dropped.Add(1)
			return nil, errors.New("broker away"), true // the connection is closed
		}
		return nil, nil, false
	})
	f, err := NewFeed(newClient(t, c.ListenAddrs(), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond })), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	runFeed(t, f)
	waitFor(t, "the record after the failures", func() bool { return len(f.Recent(Filter{})) == 1 })
	if n := dropped.Load(); n < 5 {
		t.Fatalf("%d fetches failed, want 5", n)
	}
}
