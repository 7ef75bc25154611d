package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// PartitionLag is where a consumer group stands on one partition.
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Owner is the member consuming the partition ("client-id host"), ""
	// when no member holds it; Member is that member's id.
	Owner  string `json:"owner"`
	Member string `json:"member,omitempty"`
	// Committed is the group's committed offset, -1 when it committed none
	// (it then starts at the partition's start).
	Committed int64 `json:"committed"`
	// Stable is the partition's last stable offset: its end, short of any
	// transaction still open.
	Stable int64 `json:"stable"`
	// Records is how many records a read_committed consumer at the
	// committed offset has yet to read before Stable: transaction markers
	// and aborted records are not counted, so a caught-up consumer of a
	// transactional topic reads 0. When the unread part is larger than
	// what the measure reads (lagReadBytes), the markers beyond it are
	// counted as records and Estimated is set.
	Records   int64 `json:"records"`
	Estimated bool  `json:"estimated,omitempty"`
	// Oldest is the timestamp of the first record not yet consumed; zero
	// when there is none.
	Oldest time.Time `json:"oldest,omitzero"`
}

// Age is how long the first record not yet consumed has waited at now:
// the lag in seconds. Zero when the group is caught up.
func (l PartitionLag) Age(now time.Time) time.Duration {
	if l.Oldest.IsZero() {
		return 0
	}
	return max(0, now.Sub(l.Oldest))
}

// lagReadBytes bounds what GroupLag reads of one partition to count its
// unread records: a few fetches, enough for any consumer that keeps up.
const lagReadBytes = 4 << 20

// GroupLag measures group's lag on every partition of topics. It lists the
// members, the committed offsets and the last stable offsets, then, for
// each partition where the committed offset is short of the last stable
// one, reads from the committed offset (read_committed, at most
// lagReadBytes) to count the records still unread and find the oldest
// one's time. Reading is what tells a transaction marker or an aborted
// record, which a consumer never sees, from a record it has yet to read.
func GroupLag(ctx context.Context, cl *kgo.Client, group string, topics ...string) ([]PartitionLag, error) {
	adm := kadm.NewClient(cl)
	meta, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("metadata of %v: %w", topics, err)
	}
	if err := meta.Topics.Error(); err != nil {
		return nil, fmt.Errorf("metadata of %v: %w", topics, err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("last stable offsets of %v: %w", topics, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("start offsets of %v: %w", topics, err)
	}
	commits, err := adm.FetchOffsetsForTopics(ctx, group, topics...)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	type member struct{ owner, id string }
	owners := map[string]map[int32]member{}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", group, err)
	}
	for _, m := range described[group].Members {
		c, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range c.Topics {
			if owners[t.Topic] == nil {
				owners[t.Topic] = map[int32]member{}
			}
			for _, p := range t.Partitions {
				owners[t.Topic][p] = member{m.ClientID + " " + m.ClientHost, m.MemberID}
			}
		}
	}

	var lags []PartitionLag
	for _, t := range meta.Topics.Sorted() {
		for _, p := range t.Partitions.Sorted() {
			o := owners[t.Topic][p.Partition]
			l := PartitionLag{Topic: t.Topic, Partition: p.Partition, Owner: o.owner, Member: o.id, Committed: -1}
			if o, ok := stable.Lookup(t.Topic, p.Partition); ok {
				if o.Err != nil {
					return nil, fmt.Errorf("last stable offset of %s/%d: %w", t.Topic, p.Partition, o.Err)
				}
				l.Stable = o.Offset
			}
			if c, ok := commits.Lookup(t.Topic, p.Partition); ok && c.Err == nil && c.At >= 0 {
				l.Committed = c.At
			}
			lags = append(lags, l)
		}
	}
	for i := range lags {
		l := &lags[i]
		from := l.Committed
		if s, ok := starts.Lookup(l.Topic, l.Partition); ok && s.Err == nil {
			from = max(from, s.Offset)
		}
		if from < 0 || from >= l.Stable {
			continue
		}
		leader := meta.Topics[l.Topic].Partitions[l.Partition].Leader
		if err := unread(ctx, cl, leader, meta.Topics[l.Topic].ID, from, l); err != nil {
			return nil, fmt.Errorf("reading %s/%d from %d: %w", l.Topic, l.Partition, from, err)
		}
	}
	return lags, nil
}

// unread reads l's partition from offset from up to its last stable
// offset, at most lagReadBytes, and sets l.Records, l.Estimated and
// l.Oldest from the records a read_committed consumer would get.
func unread(ctx context.Context, cl *kgo.Client, leader int32, id [16]byte, from int64, l *PartitionLag) error {
	opts := kgo.ProcessFetchPartitionOpts{Topic: l.Topic, Partition: l.Partition, IsolationLevel: kgo.ReadCommitted()}
	dec := kgo.DefaultDecompressor()
	at, read := from, 0
	for at < l.Stable && read < lagReadBytes {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.IsolationLevel = 1
		req.MaxWaitMillis = 0
		req.MaxBytes = 1 << 20
		t := kmsg.NewFetchRequestTopic()
		t.Topic, t.TopicID = l.Topic, id
		p := kmsg.NewFetchRequestTopicPartition()
		p.Partition, p.FetchOffset, p.PartitionMaxBytes = l.Partition, at, 1<<20
		p.CurrentLeaderEpoch, p.LogStartOffset = -1, -1
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return errors.New("fetch answered for no partition")
		}
		rp := &resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			return err
		}
		if len(rp.RecordBatches) == 0 {
			break
		}
		read += len(rp.RecordBatches)
		opts.Offset = at
		// ProcessFetchPartition answers the offset to read next: past
		// the markers and aborted batches it skipped too.
		fp, next := kgo.ProcessFetchPartition(opts, rp, dec, nil)
		if fp.Err != nil {
			return fp.Err
		}
		for _, r := range fp.Records {
			if r.Offset >= l.Stable {
				break
			}
			if l.Oldest.IsZero() {
				l.Oldest = r.Timestamp
			}
			l.Records++
		}
		if next <= at {
			break // nothing whole in this fetch: no progress to make
		}
		at = next
	}
	if at < l.Stable {
		l.Records += l.Stable - at
		l.Estimated = true
		if l.Oldest.IsZero() {
			// Unread beyond the bound: its time is unknown, but it is
			// no newer than now.
			l.Oldest = time.Now()
		}
	}
	return nil
}

// SortLags orders lags by topic, then partition.
func SortLags(lags []PartitionLag) {
	slices.SortFunc(lags, func(a, b PartitionLag) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
}
