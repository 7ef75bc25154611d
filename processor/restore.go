package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
			delete(r.states[rec.Partition], string(rec.Key))
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
	pend := map[string]*pending{}
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
		r.states[rec.Partition][key] = &entry{state: v.State, deleted: v.Deleted}
		pend[key] = &pending{key: key, partition: rec.Partition, first: v.First, count: v.Count,
			firstSeen: v.FirstSeen, lastSeen: v.LastSeen, firstRecv: v.FirstRecv, lastRecv: v.LastRecv}
	})
	r.records += n
	for _, pe := range pend {
		r.pending = append(r.pending, pe)
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
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("end offsets of %s: %w", topic, err)
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
