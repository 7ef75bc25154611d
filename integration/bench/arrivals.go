package main

// What the freshness runs and the sinks' input share: when each product's
// record reached a topic, and when the edge accepted each product.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// arrival is when a key's first record reached the watcher, and that
// record's timestamp (when its producer wrote it).
type arrival struct {
	at, produced time.Time
}

// arrivals watches a topic from its start with a read_committed consumer:
// for each key, when its first record arrived; per partition, the offset
// after the last record read (before a transaction's commit marker, which
// no consumer commits past); and how much was read.
type arrivals struct {
	mu         sync.Mutex
	first      map[string]arrival
	next       map[int32]int64
	records    int64
	valueBytes int64
	stop       func() // stops the watcher and waits for it; idempotent
}

// watchArrivals starts watching topic. Call stop when done.
func (h *harness) watchArrivals(ctx context.Context, topic string) (*arrivals, error) {
	cl, err := kgo.NewClient(h.o.svc.opts(kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	a := &arrivals{first: map[string]arrival{}, next: map[int32]int64{}}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for cctx.Err() == nil {
			fetches := cl.PollFetches(cctx)
			now := time.Now()
			a.mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) {
				if _, ok := a.first[string(r.Key)]; !ok {
					a.first[string(r.Key)] = arrival{at: now, produced: r.Timestamp}
				}
				a.next[r.Partition] = max(a.next[r.Partition], r.Offset+1)
				a.records++
				a.valueBytes += int64(len(r.Value))
			})
			a.mu.Unlock()
		}
	}()
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			cl.Close()
		})
	}
	return a, nil
}

// get returns the first arrival of key.
func (a *arrivals) get(key string) (arrival, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.first[key]
	return t, ok
}

// keys is the number of distinct keys seen.
func (a *arrivals) keys() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.first)
}

// acceptedSet is when the edge answered 202 to each product, by record key.
type acceptedSet struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newAcceptedSet() *acceptedSet { return &acceptedSet{at: map[string]time.Time{}} }

// add is a loadSpec.accepted callback.
func (s *acceptedSet) add(id string, at time.Time) {
	s.mu.Lock()
	s.at[benchNamespace+":"+id] = at
	s.mu.Unlock()
}

// snapshot returns a copy of the set.
func (s *acceptedSet) snapshot() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.at))
	for k, v := range s.at {
		out[k] = v
	}
	return out
}

// waitUntil calls done every 100ms until it returns true, deadline passes
// (it then returns false) or ctx ends.
func waitUntil(ctx context.Context, deadline time.Time, done func() bool) (bool, error) {
	for {
		if done() {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
