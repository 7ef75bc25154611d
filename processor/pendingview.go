package processor

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// PendingEntry is one key's entry in a processor group's pending changelog
// (topics.Names.Pending(group), exactly-once mode): changes the group has
// merged into the key's state but not emitted yet. The changelog holds the
// latest entry per key; a tombstone means the key was emitted and nothing
// is pending. The entry records when its changes arrived, not when they
// are due, which depends on the group's quiet period and max delay: see
// Due.
type PendingEntry struct {
	// State is the key's state with the buffered changes merged: what the
	// group will write to the state topic.
	State schemas.State
	// Deleted says the last buffered change deleted the key; DeletedAt is
	// when that delete occurred (zero when it did not say).
	Deleted   bool
	DeletedAt time.Time
	// FirstOffset is the offset on changes of the first buffered change,
	// Count how many changes are buffered.
	FirstOffset int64
	Count       int
	// FirstSeen and LastSeen are the group's wall clock when the first
	// and the latest buffered change arrived: FirstSeen is when the key
	// became pending.
	FirstSeen, LastSeen time.Time
	// FirstReceived and LastReceived are those changes' received_at.
	FirstReceived, LastReceived time.Time
}

// Due is when a group with this quiet period and max delay emits the
// entry: quiet after the latest buffered change, but no later than
// maxDelay after the first; a delete is due as soon as it arrived.
func (e PendingEntry) Due(quiet, maxDelay time.Duration) time.Time {
	if e.Deleted {
		return e.LastSeen
	}
	due := e.LastSeen.Add(quiet)
	if capAt := e.FirstSeen.Add(maxDelay); capAt.Before(due) {
		due = capAt
	}
	return due
}

// DecodePendingEntry decodes the value of a pending changelog record that
// is not a tombstone, in the form the processor writes or in the JSON form
// of earlier versions.
func DecodePendingEntry(value []byte) (PendingEntry, error) {
	v, err := decodePending(value)
	if err != nil {
		return PendingEntry{}, fmt.Errorf("decode pending entry: %w", err)
	}
	e := PendingEntry{State: v.State, Deleted: v.Deleted, FirstOffset: v.First, Count: v.Count,
		FirstSeen: v.FirstSeen, LastSeen: v.LastSeen, FirstReceived: v.FirstRecv, LastReceived: v.LastRecv}
	if v.DeletedAt != 0 {
		e.DeletedAt = time.UnixMilli(v.DeletedAt)
	}
	return e, nil
}

// PendingKey is the key of a resource's entries in the pending changelog,
// given the resource ("product", "collection", ...; the resources of
// topics.Names.Resources) and the record key its changes carry. It reports
// false for a resource the processor keeps no state of.
func PendingKey(resource, recordKey string) ([]byte, bool) {
	tag, ok := resourceTags[resource]
	if !ok {
		return nil, false
	}
	return []byte(internalKey(tag, []byte(recordKey))), true
}

// PendingPartition is the partition of a pending changelog with n
// partitions that holds the entries of the keys on changesPartition of the
// changes topic. The entry's key carries the resource's tag, so hashing
// it would not find the partition.
func PendingPartition(changesPartition int32, n int) int32 {
	return int32(setPartition{}.Partition(&kgo.Record{Partition: changesPartition}, n))
}
