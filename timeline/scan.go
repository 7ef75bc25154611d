package timeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/processor"
)

// A read sends its own requests (metadata, list offsets, fetch) rather than
// consuming: it reads one partition per topic between offsets it chose, and
// a fetch's answer says exactly where the partition's data below those
// offsets ends, which a consumer does not report.

// location is where the key's partition of one topic is.
type location struct {
	topic     string
	id        [16]byte // the topic's id, for fetches that name topics by id
	missing   bool     // the topic does not exist
	partition int32
	leader    int32
	epoch     int32 // the leader's epoch, -1 when unknown
}

// Retries of requests that fail for a reason that passes (a leader moving,
// a broker restarting), within the read's time bound.
const (
	retryBackoff = 100 * time.Millisecond
	maxTries     = 20
)

// locate finds the key's partition of changes and of the other topics,
// and their leaders, in one metadata request. The partition of pending, a
// processor group's changelog, is the one of the key's partition of
// changes (processor.PendingPartition): the processor writes an entry
// where the changes it buffers are.
func (r *Reader) locate(ctx context.Context, key []byte, changes, pending string, others ...string) (map[string]*location, error) {
	for tries := 1; ; tries++ {
		locs, err := r.metadata(ctx, key, changes, pending, others)
		if err == nil || tries == maxTries || !retriable(err) {
			return locs, err
		}
		if err := sleep(ctx, retryBackoff); err != nil {
			return nil, err
		}
	}
}

func (r *Reader) metadata(ctx context.Context, key []byte, changes, pending string, others []string) (map[string]*location, error) {
	topics := append([]string{changes, pending}, others...)
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, r.cl)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	counts := map[string]int{}
	locs := map[string]*location{}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		loc := &location{topic: *t.Topic, id: t.TopicID, partition: -1, leader: -1, epoch: -1}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			loc.missing = true
		case err != nil:
			return nil, fmt.Errorf("metadata of %s: %w", *t.Topic, err)
		case len(t.Partitions) == 0:
			return nil, fmt.Errorf("metadata of %s: %w", *t.Topic, kerr.LeaderNotAvailable)
		}
		counts[loc.topic] = len(t.Partitions)
		locs[loc.topic] = loc
	}
	for _, t := range topics {
		if locs[t] == nil {
			locs[t] = &location{topic: t, missing: true, partition: -1, leader: -1, epoch: -1}
		}
	}
	for _, t := range topics {
		if loc := locs[t]; !loc.missing {
			loc.partition = partitionOf(key, counts[t])
		}
	}
	if loc := locs[pending]; !loc.missing && !locs[changes].missing {
		loc.partition = processor.PendingPartition(locs[changes].partition, counts[pending])
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || locs[*t.Topic].missing {
			continue
		}
		loc := locs[*t.Topic]
		for _, p := range t.Partitions {
			if p.Partition != loc.partition {
				continue
			}
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil && !errors.Is(err, kerr.ReplicaNotAvailable) {
				return nil, fmt.Errorf("metadata of %s/%d: %w", loc.topic, loc.partition, err)
			}
			loc.leader, loc.epoch = p.Leader, p.LeaderEpoch
		}
		if loc.leader < 0 {
			return nil, fmt.Errorf("metadata of %s/%d: %w", loc.topic, loc.partition, kerr.LeaderNotAvailable)
		}
	}
	return locs, nil
}

// relocate refreshes loc's leader after a request to it failed.
func (r *Reader) relocate(ctx context.Context, loc *location) error {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(loc.topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r.cl)
	if err != nil {
		return fmt.Errorf("metadata of %s: %w", loc.topic, err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.Partition == loc.partition && p.Leader >= 0 {
				loc.leader, loc.epoch = p.Leader, p.LeaderEpoch
			}
		}
	}
	return nil
}

// Special timestamps of a list offsets request.
const (
	endOffset   = -1 // the last stable offset, read_committed
	startOffset = -2 // the log start offset
)

// offsetAt lists loc's offset for ts (endOffset, startOffset, or the
// first offset whose record is at or after ts ms: -1 if none).
func (r *Reader) offsetAt(ctx context.Context, loc *location, ts int64) (int64, error) {
	for tries := 1; ; tries++ {
		req := kmsg.NewPtrListOffsetsRequest()
		req.IsolationLevel = 1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = loc.topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = loc.partition, ts
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, r.cl)
		if err == nil {
			err = kerr.LeaderNotAvailable // no answer for the partition
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if p.Partition == loc.partition {
						if err = kerr.ErrorForCode(p.ErrorCode); err == nil {
							return p.Offset, nil
						}
					}
				}
			}
		}
		if tries == maxTries || !retriable(err) || ctx.Err() != nil {
			return 0, fmt.Errorf("list offsets of %s/%d: %w", loc.topic, loc.partition, err)
		}
		if err := sleep(ctx, retryBackoff); err != nil {
			return 0, err
		}
	}
}

// fetchMaxWaitMillis is how long (ms) a broker may wait for data before it answers a
// fetch empty. The read asks only for offsets below the last stable
// offset, where data is at hand, so it answers at once unless the offsets
// left hold none (compacted away), or its log is in remote storage.
const fetchMaxWaitMillis = 500

// fetch reads loc's partition from offset from up to to (exclusive),
// committed records only, and calls fn with each record, every key's, in
// offset order. It returns how many records it passed to fn. It ends at
// to, or earlier where the partition holds nothing more below to
// (compaction, aborted transactions), or with an error.
func (r *Reader) fetch(ctx context.Context, loc *location, from, to int64, fn func(*kgo.Record)) (int64, error) {
	var (
		n     int64
		next  = from
		tries = 0
	)
	for next < to {
		fp, after, err := r.fetchOnce(ctx, loc, next)
		if err != nil {
			if ctx.Err() != nil {
				return n, err
			}
			if errors.Is(err, kerr.OffsetOutOfRange) {
				// Retention removed the offsets: go on from the log start.
				start, lerr := r.offsetAt(ctx, loc, startOffset)
				if lerr == nil && start > next {
					next = start
					continue
				}
			}
			if tries++; tries == maxTries || !retriable(err) {
				return n, fmt.Errorf("fetch %s/%d at %d: %w", loc.topic, loc.partition, next, err)
			}
			if err := sleep(ctx, retryBackoff); err != nil {
				return n, err
			}
			if err := r.relocate(ctx, loc); err != nil && ctx.Err() != nil {
				return n, err
			}
			continue
		}
		tries = 0
		for _, rec := range fp.Records {
			if rec.Offset >= to {
				return n, nil
			}
			n++
			fn(rec)
		}
		if after <= next {
			return n, nil // nothing more below the last stable offset
		}
		next = after
	}
	return n, nil
}

// fetchOnce fetches loc's partition at offset from its leader, and returns
// its committed records and the offset to fetch next.
func (r *Reader) fetchOnce(ctx context.Context, loc *location, offset int64) (kgo.FetchPartition, int64, error) {
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = fetchMaxWaitMillis, 1, r.cfg.fetchBytes
	req.IsolationLevel = 1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = loc.topic, loc.id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = loc.partition, offset, r.cfg.fetchBytes, loc.epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := r.cl.Broker(int(loc.leader)).Request(ctx, req)
	if err != nil {
		return kgo.FetchPartition{}, 0, err
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return kgo.FetchPartition{}, 0, err
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			p := &resp.Topics[i].Partitions[j]
			if p.Partition != loc.partition {
				continue
			}
			fp, after := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset: offset, IsolationLevel: kgo.ReadCommitted(), Topic: loc.topic, Partition: loc.partition,
			}, p, kgo.DefaultDecompressor(), nil)
			return fp, after, fp.Err
		}
	}
	return kgo.FetchPartition{}, 0, kerr.UnknownTopicOrPartition
}

// scanWindow reads the offsets of loc's partition whose records are in
// [since, until] (a zero until: up to the end), calling keep with each of
// key's records there, oldest first, and accounts for the read in s.
func (r *Reader) scanWindow(ctx context.Context, loc *location, key []byte, since, until time.Time, s *Scan, keep func(*kgo.Record)) error {
	if loc.missing {
		s.complete = true
		return nil
	}
	end, err := r.offsetAt(ctx, loc, endOffset)
	if err != nil {
		return err
	}
	at := int64(startOffset) // a since before 1970 reads from the log start
	if ms := since.UnixMilli(); ms > 0 {
		at = ms
	}
	start, err := r.offsetAt(ctx, loc, at)
	if err != nil {
		return err
	}
	if !until.IsZero() {
		u, err := r.offsetAt(ctx, loc, max(until.UnixMilli()+1, 0))
		if err != nil {
			return err
		}
		if u >= 0 && u < end {
			end = u
		}
	}
	if start < 0 || start > end {
		start = end // nothing at or after since
	}
	if end-start > r.cfg.maxRecords {
		start, s.Truncated = end-r.cfg.maxRecords, BoundMaxRecords
	}
	s.From, s.To = start, end
	s.Records, err = r.fetch(ctx, loc, start, end, func(rec *kgo.Record) {
		if sameKey(rec, key) && !rec.Timestamp.Before(since) && (until.IsZero() || !rec.Timestamp.After(until)) {
			keep(rec)
		}
	})
	s.complete = err == nil
	return err
}

// firstChunk is how many offsets below the end scanLatest reads first;
// each further chunk is twice the one before.
const firstChunk = 4096

// scanLatest finds key's latest record on loc's partition, a compacted
// topic where it may be far below the end: it reads chunks of offsets
// backwards from the end, each from its start, until a chunk holds one of
// key's records, the log start is reached, or the offsets read reach the
// max records bound. It returns nil if none was found, and accounts for the
// read in s.
func (r *Reader) scanLatest(ctx context.Context, loc *location, key []byte, s *Scan) (*kgo.Record, error) {
	if loc.missing {
		s.complete = true
		return nil, nil
	}
	end, err := r.offsetAt(ctx, loc, endOffset)
	if err != nil {
		return nil, err
	}
	start, err := r.offsetAt(ctx, loc, startOffset)
	if err != nil {
		return nil, err
	}
	s.From, s.To = end, end
	var found *kgo.Record
	for chunk := int64(firstChunk); found == nil && s.From > start; chunk *= 2 {
		left := r.cfg.maxRecords - (end - s.From)
		if left <= 0 {
			s.Truncated = BoundMaxRecords
			break
		}
		lo, hi := max(start, s.From-min(chunk, left)), s.From
		n, err := r.fetch(ctx, loc, lo, hi, func(rec *kgo.Record) {
			if sameKey(rec, key) {
				found = rec
			}
		})
		s.Records += n
		if err != nil {
			return nil, err
		}
		s.From = lo
	}
	s.complete = true
	return found, nil
}

// retriable reports whether a request that failed with err may succeed
// when sent again: a leader moving or a broker restarting.
func retriable(err error) bool {
	return kerr.IsRetriable(err) || kgo.IsRetryableBrokerErr(err) || errors.Is(err, kerr.FencedLeaderEpoch) || errors.Is(err, kerr.UnknownLeaderEpoch) ||
		errors.Is(err, kerr.LeaderNotAvailable) || errors.Is(err, kerr.NotLeaderForPartition)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
