package processor

import (
	"container/heap"
	"time"
)

// pending is one key with changes not yet emitted.
type pending struct {
	key       string
	partition int32
	first     int64 // offset of the first buffered change
	count     int
	firstSeen time.Time // wall clock when the first buffered change arrived
	lastSeen  time.Time // wall clock when the latest one arrived
	firstRecv time.Time // received_at of the first buffered change
	lastRecv  time.Time // received_at of the latest one
	deadline  time.Time
	flushed   bool
	idx       int // position in the deadline heap
}

// coalescer buffers keys with unemitted changes and says, on the wall clock,
// when each is due: once it has been quiet for quiet, and no later than
// maxDelay after its first buffered change; a delete is due at once.
// It is not safe for concurrent use: the processor's loop owns it.
type coalescer struct {
	quiet, maxDelay time.Duration
	byKey           map[string]*pending
	due             deadlineHeap
}

func newCoalescer(quiet, maxDelay time.Duration) *coalescer {
	return &coalescer{quiet: quiet, maxDelay: maxDelay, byKey: map[string]*pending{}}
}

// add records one change for key, read at offset from partition. It returns
// the pending entry when the key was not buffered before (the caller tracks
// it for its commit watermark), else nil.
func (c *coalescer) add(key string, partition int32, offset int64, received, now time.Time, deleted bool) *pending {
	p, ok := c.byKey[key]
	if !ok {
		p = &pending{key: key, partition: partition, first: offset, firstSeen: now, firstRecv: received}
		c.byKey[key] = p
	}
	p.count++
	p.lastSeen, p.lastRecv = now, received
	p.deadline = p.lastSeen.Add(c.quiet)
	if capAt := p.firstSeen.Add(c.maxDelay); capAt.Before(p.deadline) {
		p.deadline = capAt
	}
	if deleted {
		p.deadline = now
	}
	if ok {
		heap.Fix(&c.due, p.idx)
		return nil
	}
	heap.Push(&c.due, p)
	return p
}

// restore puts back a pending entry read from the changelog, keeping its
// original times so that max_delay holds across restarts.
func (c *coalescer) restore(p *pending) {
	p.deadline = p.lastSeen.Add(c.quiet)
	if capAt := p.firstSeen.Add(c.maxDelay); capAt.Before(p.deadline) {
		p.deadline = capAt
	}
	if old, ok := c.byKey[p.key]; ok {
		heap.Remove(&c.due, old.idx)
	}
	c.byKey[p.key] = p
	heap.Push(&c.due, p)
}

// popEarliest removes and returns the n keys closest to their deadline:
// what is flushed early when too many keys are pending.
func (c *coalescer) popEarliest(n int) []*pending {
	var out []*pending
	for ; n > 0 && len(c.due) > 0; n-- {
		p := heap.Pop(&c.due).(*pending)
		delete(c.byKey, p.key)
		out = append(out, p)
	}
	return out
}

// next returns the earliest deadline, if any key is buffered.
func (c *coalescer) next() (time.Time, bool) {
	if len(c.due) == 0 {
		return time.Time{}, false
	}
	return c.due[0].deadline, true
}

// popDue removes and returns every key due at now, earliest first.
func (c *coalescer) popDue(now time.Time) []*pending {
	var out []*pending
	for len(c.due) > 0 && !c.due[0].deadline.After(now) {
		p := heap.Pop(&c.due).(*pending)
		delete(c.byKey, p.key)
		out = append(out, p)
	}
	return out
}

// popPartition removes and returns every key buffered from partition.
func (c *coalescer) popPartition(partition int32) []*pending {
	var out []*pending
	for _, p := range c.byKey {
		if p.partition == partition {
			out = append(out, p)
		}
	}
	for _, p := range out {
		heap.Remove(&c.due, p.idx)
		delete(c.byKey, p.key)
	}
	return out
}

func (c *coalescer) len() int { return len(c.byKey) }

// deadlineHeap orders pending keys by deadline.
type deadlineHeap []*pending

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *deadlineHeap) Push(x any) {
	p := x.(*pending)
	p.idx = len(*h)
	*h = append(*h, p)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}
