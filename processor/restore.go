package processor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// restored is what restore read for a set of partitions: by partition,
// the keys whose state is kept encoded (stored) and the others (states:
// deleted keys, states written without a version header, and in
// exactly-once mode the pending ones). A key is in one of the two.
type restored struct {
	states  map[int32]map[string]*entry
	stored  map[int32]map[string]storedState
	pending []*pending // exactly-once mode: the pending buffer, by first offset
	records int
}

// restore reads, for parts, every state topic and (exactly once) the
// pending changelog up to their last stable offsets, committed data only.
// State records are kept encoded, with the version their header carries,
// and decoded when a change first needs them. A pending entry is newer
// than the key's state record and replaces it.
func (p *Processor) restore(ctx context.Context, parts []int32) (*restored, error) {
	p.metrics.restoring.Add(float64(len(parts)))
	defer p.metrics.restoring.Sub(float64(len(parts)))
	start := time.Now()
	r := &restored{states: make(map[int32]map[string]*entry, len(parts)), stored: make(map[int32]map[string]storedState, len(parts))}
	for _, part := range parts {
		r.states[part], r.stored[part] = map[string]*entry{}, map[string]storedState{}
	}
	tags := map[string]byte{}
	for resource, topic := range p.cfg.Topics.Resources() {
		tags[topic] = resourceTags[resource]
	}
	topicNames := make([]string, 0, len(tags)+1)
	for topic := range tags {
		topicNames = append(topicNames, topic)
	}
	if p.eos {
		topicNames = append(topicNames, p.pending)
	}
	// Only the pending entries still alive after the whole changelog
	// count: a later tombstone means the key was flushed (its state is on
	// its state topic).
	// They are decoded once the whole changelog is read.
	type alive struct {
		value  []byte
		part   int32
		offset int64
	}
	pend := map[string]alive{}
	// The end offsets of changes, for checkVersions, are listed while the
	// topics are read.
	earlyCtx, cancelEarly := context.WithCancel(ctx)
	var (
		early   kadm.ListedOffsets
		earlyWG sync.WaitGroup
	)
	earlyWG.Go(func() { early, _ = p.changesEnds(earlyCtx) })
	defer func() {
		cancelEarly()
		earlyWG.Wait()
	}()
	opts := []kafka.ReadOption{
		kafka.WithPartitions(parts...),
		kafka.WithIdleEnd(p.cfg.RestoreIdle),
		kafka.WithErrorLimit(restoreErrorLimit),
		kafka.WithLogger(p.log),
		kafka.WithProgress(5*time.Second, func(n int64) {
			p.log.Info("restoring", "partitions", parts, "records", n, "elapsed", time.Since(start).Round(time.Millisecond))
		}),
	}
	if p.eos {
		opts = append(opts, kafka.WithSettledTransactions(settleLimit))
	}
	// Each partition's stored states are made room for at once, for as
	// many keys as its state topics hold records: filling a map that grows
	// on the way was most of filing a record.
	opts = append(opts, kafka.WithPlanned(func(plan []kafka.Partition) {
		records := map[int32]int64{}
		for _, at := range plan {
			if at.Topic != p.pending {
				records[at.Partition] += at.End - at.Next
			}
		}
		for part, n := range records {
			r.stored[part] = make(map[string]storedState, min(n, restorePresizeLimit))
		}
	}))
	// Entries are allocated a slab at a time.
	var slab []entry
	// keep files a record read. One goroutine calls it, in the order the
	// records were read, while the next ones are fetched.
	keep := func(rec *kgo.Record) {
		if rec.Topic == p.pending {
			key := string(rec.Key)
			if rec.Value == nil {
				delete(pend, key)
				return
			}
			pend[key] = alive{rec.Value, rec.Partition, rec.Offset}
			return
		}
		key := internalKey(tags[rec.Topic], rec.Key)
		states, stored := r.states[rec.Partition], r.stored[rec.Partition]
		version := headerInt(rec, versionHeader, -1)
		if rec.Value != nil && version >= 0 {
			stored[key] = storedState{rec.Value, version}
			if len(states) > 0 {
				delete(states, key) // an older record of the key, not yet compacted away
			}
			return
		}
		if len(slab) == 0 {
			slab = make([]entry, 256)
		}
		e := &slab[0]
		slab = slab[1:]
		e.version = version
		switch {
		case rec.Value == nil:
			// A delete: keep its version, time and memory of the changes
			// applied, so that replayed, older and retried changes are
			// still skipped.
			e.deleted, e.deletedAt = true, headerInt(rec, deletedAtHeader, 0)
			e.state.Version = e.version
			e.state.DedupeFingerprints = headerFingerprints(rec)
		case e.version < 0:
			// Written without the header: decode now for the version.
			st, err := p.cfg.Serde.DecodeState(ctx, rec.Value)
			if err != nil {
				p.log.Error("skipping undecodable state", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				return
			}
			e.state, e.version = st, st.Version
		}
		states[key] = e
		delete(stored, key)
	}
	batches := make(chan []*kgo.Record, 4)
	var keeper sync.WaitGroup
	keeper.Go(func() {
		for batch := range batches {
			for _, rec := range batch {
				keep(rec)
			}
		}
	})
	batch := make([]*kgo.Record, 0, restoreBatch)
	// Batches are decompressed where their records stay, without the
	// copy franz-go otherwise makes of each: the values kept are most of
	// what is read. Nothing is recycled, so the pool only sizes buffers.
	pool := kafka.NewDecompressPool()
	read, err := kafka.ReadToEnd(ctx, append(p.clientOptions(), kgo.WithPools(pool), kgo.WithHooks(pool)), topicNames, func(rec *kgo.Record) error {
		p.metrics.restoreRecords.Inc()
		if batch = append(batch, rec); len(batch) == restoreBatch {
			batches <- batch
			batch = make([]*kgo.Record, 0, restoreBatch)
		}
		return nil
	}, opts...)
	batches <- batch
	close(batches)
	keeper.Wait()
	if len(read.Idle) > 0 {
		// Nothing for RestoreIdle before the end offsets: compaction
		// removed the records at the end (a tombstone past its retention
		// in a rolled segment), nothing more will come. A broker that
		// stalls this long would cut the restore short, so it is logged.
		left := make([]string, len(read.Idle))
		for i, at := range read.Idle {
			left[i] = fmt.Sprintf("%s/%d (end %d)", at.Topic, at.Partition, at.End)
		}
		p.log.Warn("restore: nothing more arrived before the end offsets; taking the log as compacted up to there", "idle", p.cfg.RestoreIdle, "partitions", left)
	}
	n := int(read.Records)
	r.records += n
	for key, a := range pend {
		v, err := decodePending(a.value)
		if err != nil {
			p.log.Error("skipping undecodable pending entry", "partition", a.part, "offset", a.offset, "err", err)
			continue
		}
		r.states[a.part][key] = &entry{state: v.State, version: v.State.Version, deleted: v.Deleted, deletedAt: v.DeletedAt}
		delete(r.stored[a.part], key)
		r.pending = append(r.pending, &pending{key: key, partition: a.part, first: v.First, count: v.Count,
			firstSeen: v.FirstSeen, lastSeen: v.LastSeen, firstRecv: v.FirstRecv, lastRecv: v.LastRecv})
	}
	slices.SortFunc(r.pending, func(a, b *pending) int { return int(a.first - b.first) })
	took := time.Since(start)
	p.metrics.restoreDuration.Observe(took.Seconds())
	if took > 0 {
		p.metrics.restoreLastRate.Set(float64(n) / took.Seconds())
	}
	if err == nil {
		earlyWG.Wait()
		err = p.checkVersions(ctx, r, early)
	}
	return r, err
}

// restoreBatch is how many records a restore reads before the goroutine
// that files them takes them.
const restoreBatch = 256

// restorePresizeLimit bounds the keys a partition's stored states are
// made room for before its records are read: a log that compaction has
// not yet cleaned holds more records than keys.
const restorePresizeLimit = 1 << 22

// restoreErrorLimit is how long a restore retries fetches that fail (a
// broker restarting, a leader moving) before it gives up.
const restoreErrorLimit = 30 * time.Second

// settleLimit bounds how long an exactly-once restore waits for the
// transactions open on its partitions to end. A transaction left open by a
// member that died holds the last stable offset back until the broker
// aborts it (transactionTimeout): reading to that offset would miss
// transactions committed after it. Nobody else writes to partitions being
// assigned to us, so the restore waits until the last stable offset reaches
// the high watermark.
const settleLimit = 2*transactionTimeout + 10*time.Second

// Headers of state records: versionHeader carries the record's version
// (the offset on changes of the last change applied, on tombstones too),
// deletedAtHeader a tombstone's delete time in ms when the delete said,
// dedupeHeader a tombstone's schemas.State.DedupeFingerprints (as
// schemas.FingerprintsText), which a live state carries in its value.
const (
	versionHeader   = "version"
	deletedAtHeader = "deleted-at"
	dedupeHeader    = "dedupe-fingerprints"
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
