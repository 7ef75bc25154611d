package processor

import (
	"context"
	"encoding/json"
	"errors"
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
	DeletedAt int64         `json:"deleted_at,omitempty"`
	First     int64         `json:"first"`
	Count     int           `json:"count"`
	FirstSeen time.Time     `json:"first_seen"`
	LastSeen  time.Time     `json:"last_seen"`
	FirstRecv time.Time     `json:"first_received"`
	LastRecv  time.Time     `json:"last_received"`
}

func encodePending(e *entry, pe *pending) ([]byte, error) {
	e.render()
	return json.Marshal(pendingValue{State: e.state, Deleted: e.deleted, DeletedAt: e.deletedAt, First: pe.first, Count: pe.count,
		FirstSeen: pe.firstSeen, LastSeen: pe.lastSeen, FirstRecv: pe.firstRecv, LastRecv: pe.lastRecv})
}

// restore reads, for parts, every state topic and (exactly once) the
// pending changelog up to their last stable offsets, committed data only.
// State records are kept encoded, with the version their header carries,
// and decoded when a change first needs them. A pending entry is newer
// than the key's state record and replaces it.
func (p *Processor) restore(ctx context.Context, parts []int32) (*restored, error) {
	metrics.restoring.Add(float64(len(parts)))
	defer metrics.restoring.Sub(float64(len(parts)))
	start := time.Now()
	r := &restored{states: make(map[int32]map[string]*entry, len(parts))}
	for _, part := range parts {
		r.states[part] = map[string]*entry{}
	}
	tags := map[string]byte{}
	for resource, topic := range p.cfg.Topics.Resources() {
		tags[topic] = resourceTags[resource]
	}
	read := make([]string, 0, len(tags)+1)
	for topic := range tags {
		read = append(read, topic)
	}
	if p.eos {
		read = append(read, p.pending)
	}
	// Only the pending entries still alive after the whole changelog
	// count: a later tombstone means the key was flushed (its state is on
	// its state topic).
	type alive struct {
		v    pendingValue
		part int32
	}
	pend := map[string]alive{}
	n, err := p.readToEnd(ctx, read, parts, func(rec *kgo.Record) {
		if rec.Topic == p.pending {
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
			return
		}
		key := internalKey(tags[rec.Topic], rec.Key)
		e := &entry{version: headerInt(rec, versionHeader, -1)}
		switch {
		case rec.Value == nil:
			// A delete: keep its version and time, so that replayed and
			// older changes are still skipped.
			e.deleted, e.deletedAt = true, headerInt(rec, deletedAtHeader, 0)
			e.state.Version = e.version
		case e.version < 0:
			// Written without the header: decode now for the version.
			st, err := p.cfg.Serde.DecodeState(ctx, rec.Value)
			if err != nil {
				p.log.Error("skipping undecodable state", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				return
			}
			e.state, e.version = st, st.Version
		default:
			e.enc = rec.Value
		}
		r.states[rec.Partition][key] = e
	}, func(n int) {
		p.log.Info("restoring", "partitions", parts, "records", n, "elapsed", time.Since(start).Round(time.Millisecond))
	})
	r.records += n
	for key, a := range pend {
		r.states[a.part][key] = &entry{state: a.v.State, version: a.v.State.Version, deleted: a.v.Deleted, deletedAt: a.v.DeletedAt}
		r.pending = append(r.pending, &pending{key: key, partition: a.part, first: a.v.First, count: a.v.Count,
			firstSeen: a.v.FirstSeen, lastSeen: a.v.LastSeen, firstRecv: a.v.FirstRecv, lastRecv: a.v.LastRecv})
	}
	slices.SortFunc(r.pending, func(a, b *pending) int { return int(a.first - b.first) })
	took := time.Since(start)
	metrics.restoreDuration.Observe(took.Seconds())
	if took > 0 {
		metrics.restoreLastRate.Set(float64(n) / took.Seconds())
	}
	return r, err
}

// restoreErrorLimit is how long a restore retries failing fetches.
const restoreErrorLimit = 30 * time.Second

// readToEnd reads the partitions parts of each of topics from the start to
// their last stable offsets (committed records only), calling fn for each
// record, and progress with the count so far every few seconds.
func (p *Processor) readToEnd(ctx context.Context, topicNames []string, parts []int32, fn func(*kgo.Record), progress func(int)) (int, error) {
	consume := map[string]map[int32]kgo.Offset{}
	for _, topic := range topicNames {
		consume[topic] = map[int32]kgo.Offset{}
		for _, part := range parts {
			consume[topic][part] = kgo.NewOffset().AtStart()
		}
	}
	cl, err := kgo.NewClient(append(topics.ClientOptions(p.cfg.Brokers, p.cfg.Log),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers are delivered too, so that a partition
		// ending in one is seen to end.
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(consume))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := p.stableEnds(ctx, kadm.NewClient(cl), topicNames, parts)
	if err != nil {
		return 0, err
	}
	type tp struct {
		topic string
		part  int32
	}
	remaining := map[tp]int64{}
	for _, topic := range topicNames {
		for _, part := range parts {
			o, ok := ends.Lookup(topic, part)
			if ok && o.Err != nil {
				return 0, fmt.Errorf("end offset of %s/%d: %w", topic, part, o.Err)
			}
			if ok && o.Offset > 0 {
				remaining[tp{topic, part}] = o.Offset
			}
		}
	}
	n, lastReport := 0, time.Now()
	var failingSince time.Time
	for len(remaining) > 0 {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.RestoreIdle)
		fetches := cl.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		// A fetch error (a broker restarting, a leader moving) is not the
		// end of the log: retry, and give up only if it persists.
		var fetchErr error
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fetchErr = fmt.Errorf("fetch %s/%d: %w", t, part, err)
			}
		})
		if fetchErr != nil && fetches.Empty() {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > restoreErrorLimit {
				return n, fmt.Errorf("restore: fetches failing for %s: %w", restoreErrorLimit, fetchErr)
			}
			p.log.Warn("restore fetch failed; retrying", "err", fetchErr)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		failingSince = time.Time{}
		if fetches.Empty() && idle {
			// Nothing for RestoreIdle before the end offset: compaction
			// removed the records at the end (a tombstone past its
			// retention in a rolled segment), nothing more will come. A
			// broker that stalls this long would cut the restore short,
			// so it is logged.
			left := make([]string, 0, len(remaining))
			for at, end := range remaining {
				left = append(left, fmt.Sprintf("%s/%d (end %d)", at.topic, at.part, end))
			}
			p.log.Warn("restore: nothing more arrived before the end offsets; taking the log as compacted up to there", "idle", p.cfg.RestoreIdle, "partitions", left)
			break
		}
		before := n
		fetches.EachRecord(func(rec *kgo.Record) {
			at := tp{rec.Topic, rec.Partition}
			end, ok := remaining[at]
			if !ok {
				return
			}
			if !rec.Attrs.IsControl() {
				fn(rec)
				n++
			}
			if rec.Offset+1 >= end {
				delete(remaining, at)
			}
		})
		metrics.restoreRecords.Add(float64(n - before))
		if time.Since(lastReport) > 5*time.Second {
			progress(n)
			lastReport = time.Now()
		}
	}
	return n, nil
}

// Headers of state records: versionHeader carries the record's version
// (the offset on changes of the last change applied, on tombstones too),
// deletedAtHeader a tombstone's delete time in ms when the delete said.
const (
	versionHeader   = "version"
	deletedAtHeader = "deleted-at"
)

// headerInt returns the integer in r's header key, or def.
func headerInt(r *kgo.Record, key string, def int64) int64 {
	for _, h := range r.Headers {
		if h.Key == key {
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				return v
			}
		}
	}
	return def
}

// stableEnds returns the end offsets to read parts of topic to. Exactly
// once, a transaction left open by a member that died holds the last stable
// offset back until the broker aborts it (TransactionTimeout): reading to
// that offset would miss transactions committed after it. So the restore
// waits until the last stable offset reaches the high watermark: nobody
// else writes to partitions being assigned to us.
func (p *Processor) stableEnds(ctx context.Context, adm *kadm.Client, topicNames []string, parts []int32) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(2*transactionTimeout + 10*time.Second)
	for {
		lso, err := adm.ListCommittedOffsets(ctx, topicNames...)
		if err != nil {
			return nil, fmt.Errorf("stable offsets of %v: %w", topicNames, err)
		}
		if !p.eos {
			return lso, nil
		}
		hwm, err := adm.ListEndOffsets(ctx, topicNames...)
		if err != nil {
			return nil, fmt.Errorf("end offsets of %v: %w", topicNames, err)
		}
		open := ""
		for _, topic := range topicNames {
			for _, part := range parts {
				l, _ := lso.Lookup(topic, part)
				h, _ := hwm.Lookup(topic, part)
				if l.Offset < h.Offset {
					open = topic
				}
			}
		}
		if open == "" {
			return lso, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: a transaction stayed open past %s", open, 2*transactionTimeout+10*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
