package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// restored is what restore read for a set of partitions.
type restored struct {
	states  map[int32]map[string]*entry
	pending []*pending // exactly-once mode: the pending buffer, by first offset
	records int
}

// pendingValue is one pending buffer entry in the changelog. The changelog
// is internal to a processor group, so it is JSON, not a published schema.
type pendingValue struct {
	State     schemas.State `json:"state"`
	Deleted   bool          `json:"deleted"`
	First     int64         `json:"first"`
	Count     int           `json:"count"`
	FirstSeen time.Time     `json:"first_seen"`
	LastSeen  time.Time     `json:"last_seen"`
	FirstRecv time.Time     `json:"first_received"`
	LastRecv  time.Time     `json:"last_received"`
}

func encodePending(e *entry, pe *pending) ([]byte, error) {
	return json.Marshal(pendingValue{State: e.state, Deleted: e.deleted, First: pe.first, Count: pe.count,
		FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv})
}

// restore reads, for parts, the products topic and (exactly once) the
// pending changelog up to their last stable offsets, committed data only.
// A pending entry is newer than the product's state and replaces it.
func (p *Processor) restore(ctx context.Context, parts []int32) (*restored, error) {
	r := &restored{states: make(map[int32]map[string]*entry, len(parts))}
	for _, part := range parts {
		r.states[part] = map[string]*entry{}
	}
	n, err := p.readToEnd(ctx, p.cfg.Topics.Products, parts, func(rec *kgo.Record) {
		if rec.Value == nil {
			// A delete: keep its version, so that replayed changes at or
			// below it are still skipped.
			r.states[rec.Partition][string(rec.Key)] = &entry{deleted: true, state: schemas.State{Version: tombstoneVersion(rec)}}
		} else if st, err := p.cfg.Serde.DecodeState(ctx, rec.Value); err != nil {
			p.log.Error("skipping undecodable state", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		} else {
			r.states[rec.Partition][string(rec.Key)] = &entry{state: st}
		}
	})
	r.records += n
	if err != nil || p.sess == nil {
		return r, err
	}
	// Only the entries still alive after the whole changelog count: a
	// later tombstone means the key was flushed (its state is on products).
	type alive struct {
		v    pendingValue
		part int32
	}
	pend := map[string]alive{}
	n, err = p.readToEnd(ctx, p.pending, parts, func(rec *kgo.Record) {
		key := string(rec.Key)
		if rec.Value == nil {
			delete(pend, key)
			return
		}
		var v pendingValue
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			p.log.Error("skipping undecodable pending entry", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			return
		}
		pend[key] = alive{v, rec.Partition}
	})
	r.records += n
	for key, a := range pend {
		r.states[a.part][key] = &entry{state: a.v.State, deleted: a.v.Deleted}
		r.pending = append(r.pending, &pending{key: key, partition: a.part, first: a.v.First, count: a.v.Count,
			firstSeen: a.v.FirstSeen, lastSeen: a.v.LastSeen, firstRecv: a.v.FirstRecv, lastRecv: a.v.LastRecv})
	}
	slices.SortFunc(r.pending, func(a, b *pending) int { return int(a.first - b.first) })
	return r, err
}

// readToEnd reads topic's partitions parts from the start to their last
// stable offsets (committed records only), calling fn for each record.
func (p *Processor) readToEnd(ctx context.Context, topic string, parts []int32, fn func(*kgo.Record)) (int, error) {
	start := map[int32]kgo.Offset{}
	for _, part := range parts {
		start[part] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(topics.ClientOptions(p.cfg.Brokers, p.cfg.Log),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers are delivered too, so that a partition
		// ending in one is seen to end.
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := p.stableEnds(ctx, kadm.NewClient(cl), topic, parts)
	if err != nil {
		return 0, err
	}
	remaining := map[int32]int64{}
	for _, part := range parts {
		o, ok := ends.Lookup(topic, part)
		if ok && o.Err != nil {
			return 0, fmt.Errorf("end offset of %s/%d: %w", topic, part, o.Err)
		}
		if ok && o.Offset > 0 {
			remaining[part] = o.Offset
		}
	}
	n := 0
	for len(remaining) > 0 {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.RestoreIdle)
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if fetches.Empty() {
			// Compaction removed the records at the end: nothing more
			// will come.
			break
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			end, ok := remaining[rec.Partition]
			if !ok {
				return
			}
			if !rec.Attrs.IsControl() {
				fn(rec)
				n++
			}
			if rec.Offset+1 >= end {
				delete(remaining, rec.Partition)
			}
		})
	}
	return n, nil
}

// versionHeader carries a tombstone's version: the offset on changes of the
// delete it stands for.
const versionHeader = "version"

func tombstoneVersion(r *kgo.Record) int64 {
	for _, h := range r.Headers {
		if h.Key == versionHeader {
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// stableEnds returns the end offsets to read parts of topic to. Exactly
// once, a transaction left open by a member that died holds the last stable
// offset back until the broker aborts it (TransactionTimeout): reading to
// that offset would miss transactions committed after it. So the restore
// waits until the last stable offset reaches the high watermark: nobody
// else writes to partitions being assigned to us.
func (p *Processor) stableEnds(ctx context.Context, adm *kadm.Client, topic string, parts []int32) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(2*transactionTimeout + 10*time.Second)
	for {
		lso, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("stable offsets of %s: %w", topic, err)
		}
		if p.sess == nil {
			return lso, nil
		}
		hwm, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
		}
		open := false
		for _, part := range parts {
			l, _ := lso.Lookup(topic, part)
			h, _ := hwm.Lookup(topic, part)
			open = open || l.Offset < h.Offset
		}
		if !open {
			return lso, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: a transaction stayed open past %s", topic, 2*transactionTimeout+10*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
