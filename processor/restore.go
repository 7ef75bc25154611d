package processor

import (
	"context"
	"fmt"
	"runtime"
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
		kafka.WithIdleEnd(p.cfg.RestoreIdle),
		kafka.WithErrorLimit(restoreErrorLimit),
		kafka.WithLogger(p.log),
	}
	if p.eos {
		opts = append(opts, kafka.WithSettledTransactions(settleLimit))
	}
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
	// The partitions are read by several clients at once, each fetching
	// and decompressing on a goroutine of its own; one goroutine files
	// what they read, a partition's records in the order they were read.
	batches := make(chan []*kgo.Record, 4)
	var keeper sync.WaitGroup
	keeper.Go(func() {
		for batch := range batches {
			for _, rec := range batch {
				keep(rec)
			}
		}
	})
	groups := restoreGroups(parts, min(runtime.GOMAXPROCS(0), restoreReaders))
	results := make([]kafka.ReadResult, len(groups))
	readCtx, cancelRead := context.WithCancelCause(ctx)
	defer cancelRead(nil)
	var (
		readers sync.WaitGroup
		errOnce sync.Once
		readErr error
	)
	for i, group := range groups {
		readers.Go(func() {
			batch := make([]*kgo.Record, 0, restoreBatch)
			var err error
			results[i], err = kafka.ReadToEnd(readCtx, p.clientOptions(), topicNames, func(rec *kgo.Record) error {
				p.metrics.restoreRecords.Inc()
				if batch = append(batch, rec); len(batch) == restoreBatch {
					batches <- batch
					batch = make([]*kgo.Record, 0, restoreBatch)
				}
				return nil
			}, append(slices.Clip(opts), kafka.WithPartitions(group...),
				kafka.WithProgress(5*time.Second, func(n int64) {
					p.log.Info("restoring", "partitions", group, "records", n, "elapsed", time.Since(start).Round(time.Millisecond))
				}))...)
			batches <- batch
			if err != nil {
				errOnce.Do(func() { readErr = err })
				cancelRead(err) // the first error ends the other reads
			}
		})
	}
	readers.Wait()
	close(batches)
	keeper.Wait()
	var read kafka.ReadResult
	for _, res := range results {
		read.Records += res.Records
		read.Idle = append(read.Idle, res.Idle...)
	}
	err := readErr
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

// restoreGroups deals parts out to n readers, or fewer when there are
// fewer partitions.
func restoreGroups(parts []int32, n int) [][]int32 {
	groups := make([][]int32, min(max(n, 1), len(parts)))
	for i, part := range parts {
		groups[i%len(groups)] = append(groups[i%len(groups)], part)
	}
	return groups
}

// restoreReaders bounds the clients a restore reads its partitions with
// (and GOMAXPROCS, too).
const restoreReaders = 4

// restoreBatch is how many records a restore reads before the goroutine
// that files them takes them.
const restoreBatch = 256

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
