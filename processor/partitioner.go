package processor

import "github.com/twmb/franz-go/pkg/kgo"

// pendingPartitioner writes a pending changelog record to the partition of
// the changes it buffers (set on the record): its key carries the
// resource's tag, so hashing it would pick another partition than the
// record key's. Every other record is partitioned by key, with Kafka's
// murmur2, so it lands co-partitioned with its changes.
type pendingPartitioner struct {
	pending string
	byKey   kgo.Partitioner
}

func (pp pendingPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == pp.pending {
		return setPartition{}
	}
	return pp.byKey.ForTopic(topic)
}

// setPartition keeps the partition set on the record.
type setPartition struct{}

func (setPartition) RequiresConsistency(*kgo.Record) bool { return true }
func (setPartition) Partition(r *kgo.Record, n int) int   { return int(r.Partition) % n }
