package processor

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Changes within the quiet period collapse into one emission carrying them all.
func TestCoalescerQuietPeriodCollapses(t *testing.T) {
	c := newCoalescer(2*time.Second, 30*time.Second)
	for i := range 5 {
		c.add("k", 0, int64(i), t0, t0.Add(time.Duration(i)*100*time.Millisecond), false)
	}
	if due := c.popDue(t0.Add(2300 * time.Millisecond)); len(due) != 0 {
		t.Fatalf("emitted before the key was quiet: %d", len(due))
	}
	due := c.popDue(t0.Add(2400 * time.Millisecond))
	if len(due) != 1 || due[0].count != 5 || due[0].first != 0 {
		t.Fatalf("want one emission of 5 from offset 0, got %+v", due)
	}
	if c.len() != 0 {
		t.Fatal("emitted key still buffered")
	}
}

// A key that never goes quiet is still emitted max_delay after its first change.
func TestCoalescerMaxDelayCapsHotKey(t *testing.T) {
	c := newCoalescer(time.Second, 2*time.Second)
	var emitted []time.Time
	for i := 0; i < 100; i++ { // a change every 100 ms for 10 s
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		for _, p := range c.popDue(now) {
			emitted = append(emitted, now)
			_ = p
		}
		c.add("hot", 0, int64(i), now, now, false)
	}
	if len(emitted) < 4 {
		t.Fatalf("hot key emitted %d times in 10 s with max_delay 2s", len(emitted))
	}
	prev := t0
	for _, at := range emitted {
		if gap := at.Sub(prev); gap > 2*time.Second+100*time.Millisecond {
			t.Fatalf("gap of %s between emissions exceeds max_delay", gap)
		}
		prev = at
	}
}

func TestCoalescerDeleteIsDueAtOnce(t *testing.T) {
	c := newCoalescer(time.Hour, time.Hour)
	c.add("a", 0, 1, t0, t0, false)
	c.add("b", 0, 2, t0, t0, false)
	c.add("a", 0, 3, t0, t0, true)
	due := c.popDue(t0)
	if len(due) != 1 || due[0].key != "a" || due[0].count != 2 {
		t.Fatalf("want only the deleted key due, got %+v", due)
	}
}

func TestCoalescerPopPartition(t *testing.T) {
	c := newCoalescer(time.Second, time.Second)
	c.add("a", 0, 1, t0, t0, false)
	c.add("b", 1, 1, t0, t0, false)
	c.add("c", 1, 2, t0, t0.Add(time.Millisecond), false)
	got := c.popPartition(1)
	if len(got) != 2 || c.len() != 1 {
		t.Fatalf("popPartition(1) took %d, left %d", len(got), c.len())
	}
	if due := c.popDue(t0.Add(time.Hour)); len(due) != 1 || due[0].key != "a" {
		t.Fatalf("heap inconsistent after popPartition: %+v", due)
	}
}

func TestPartitionWatermarkNeverPassesBufferedChange(t *testing.T) {
	a := &pending{first: 5}
	b := &pending{first: 9}
	pt := &partition{next: 12, queue: []*pending{a, b}}
	if w := pt.watermark(); w != 5 {
		t.Fatalf("watermark %d, want 5 (a buffered)", w)
	}
	b.flushed = true
	if w := pt.watermark(); w != 5 {
		t.Fatalf("watermark %d, want 5 (a still buffered)", w)
	}
	a.flushed = true
	if w := pt.watermark(); w != 12 {
		t.Fatalf("watermark %d, want 12 (all written)", w)
	}
}

// The tests below run the processor's own coalescing path (consume, the
// poll's wait until the next deadline, due, the records of due keys) on
// synctest's virtual time without Kafka, so they assert exact times, take
// no wall-clock time and cannot be flaky. The end-to-end tests on kfake
// (processor_test.go) run on virtual time too, through kfake's virtual
// network (Config.Dialer reaches restore's clients as well); these pin the
// coalescing path alone.

// virtualRun stands in for Run's loop without Kafka: each change sent on in
// is one poll's record (on partition 0), a round waits for one as long as
// poll would (pollWait), and after it the keys that came due are built into
// records as a cycle builds them, and taken as written. It returns the
// updates in the order emitted once in is closed and nothing is buffered.
// Call it inside a synctest bubble.
func virtualRun(t *testing.T, p *Processor, in <-chan schemas.Change) []schemas.Update {
	t.Helper()
	p.parts[0] = &partition{states: map[string]*entry{}, next: -1, committed: -1}
	var ups []schemas.Update
	for offset := int64(0); in != nil || p.co.len() > 0; {
		timer := time.NewTimer(p.pollWait())
		select {
		case ch, ok := <-in:
			if !ok {
				in = nil
				break
			}
			v, err := p.cfg.Serde.EncodeChange(&ch)
			if err != nil {
				t.Fatal(err)
			}
			rec := &kgo.Record{Topic: p.cfg.Topics.Changes, Key: []byte(ch.Key()), Value: v, Offset: offset}
			p.mu.Lock()
			p.consumeFetches(kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: rec.Topic, Partitions: []kgo.FetchPartition{{Records: []*kgo.Record{rec}}}}}}}, nil)
			p.mu.Unlock()
			offset++
		case <-timer.C:
		}
		timer.Stop()
		p.mu.Lock()
		due := p.due()
		records, err := p.outputs(due)
		for _, d := range due {
			d.flushed = true
		}
		p.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range records {
			if r.Topic != p.cfg.Topics.Updates {
				continue
			}
			u, err := p.cfg.Serde.DecodeUpdate(context.Background(), r.Value)
			if err != nil {
				t.Fatal(err)
			}
			ups = append(ups, u)
		}
	}
	return ups
}

// newVirtualProcessor is a processor without a client, for virtualRun.
func newVirtualProcessor(t *testing.T, serde *schemas.Serde, quiet, maxDelay time.Duration) *Processor {
	t.Helper()
	cfg := withDefaults(Config{Brokers: []string{"unused:9092"}, Topics: topics.For("t."), Group: "g", QuietPeriod: quiet, MaxDelay: maxDelay,
		Serde: serde, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := validate(&cfg); err != nil {
		t.Fatal(err)
	}
	return newProcessor(cfg)
}

// sendEvery sends each change, stamped with the virtual time it is sent,
// then waits period; then it closes in.
func sendEvery(period time.Duration, in chan<- schemas.Change, changes ...schemas.Change) {
	for _, ch := range changes {
		ch.ReceivedAt = time.Now()
		in <- ch
		time.Sleep(period)
	}
	close(in)
}

func virtualChange(id string, deleted bool) schemas.Change {
	return schemas.Change{EventID: "e", Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: id, Deleted: deleted, Raw: `{"productId":"` + id + `"}`}
}

// A burst within the quiet period is one update, emitted exactly one quiet
// period after its last change.
func TestProcessorQuietPeriodOnVirtualTime(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		const quiet = time.Second
		p := newVirtualProcessor(t, serde, quiet, 10*time.Second)
		in := make(chan schemas.Change)
		burst := slices.Repeat([]schemas.Change{virtualChange("p1", false)}, 5)
		go sendEvery(100*time.Millisecond, in, burst...)
		ups := virtualRun(t, p, in)
		if len(ups) != 1 || ups[0].ChangeCount != 5 {
			t.Fatalf("want one update of 5 changes, got %+v", ups)
		}
		if got := ups[0].EmittedAt.Sub(ups[0].LastReceivedAt); got != quiet {
			t.Fatalf("emitted %s after the last change, want the quiet period %s", got, quiet)
		}
	})
}

// A product that never goes quiet is emitted exactly max_delay after the
// first change each update stands for, and every change is counted once.
func TestProcessorMaxDelayOnVirtualTime(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		const maxDelay = time.Second
		p := newVirtualProcessor(t, serde, 500*time.Millisecond, maxDelay)
		in := make(chan schemas.Change)
		const sent = 12 // one every 300 ms: 3.3 s without a quiet 500 ms
		go sendEvery(300*time.Millisecond, in, slices.Repeat([]schemas.Change{virtualChange("hot", false)}, sent)...)
		ups := virtualRun(t, p, in)
		total := 0
		for i, u := range ups {
			total += int(u.ChangeCount)
			if got := u.EmittedAt.Sub(u.FirstReceivedAt); got != maxDelay {
				t.Errorf("update %d emitted %s after its first change, want max_delay %s", i, got, maxDelay)
			}
		}
		if len(ups) != 3 || total != sent {
			t.Fatalf("%d updates standing for %d changes, want 3 for %d", len(ups), total, sent)
		}
	})
}

// A delete is emitted the moment it is consumed, whatever the quiet period.
func TestProcessorDeleteAtOnceOnVirtualTime(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		p := newVirtualProcessor(t, serde, time.Hour, time.Hour)
		in := make(chan schemas.Change)
		go sendEvery(time.Minute, in, virtualChange("gone", false), virtualChange("gone", true))
		ups := virtualRun(t, p, in)
		if len(ups) != 1 || !ups[0].Deleted || ups[0].ChangeCount != 2 || !ups[0].EmittedAt.Equal(ups[0].LastReceivedAt) {
			t.Fatalf("want one delete update of 2 changes at the delete's time, got %+v", ups)
		}
	})
}
