package processor

import (
	"testing"
	"time"
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
