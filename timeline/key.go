package timeline

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrBadKey surfaces from Read, wrapped with the reason, for a key that
// is not a record key productstream writes: empty, without the
// "<namespace>:<id>" shape, longer than MaxKeyBytes, not UTF-8, or with a
// control character.
var ErrBadKey = errors.New("timeline: bad key")

// MaxKeyBytes is the longest key Read accepts.
const MaxKeyBytes = 512

// checkKey returns nil for a key Read accepts, else an error wrapping
// ErrBadKey. The key is not quoted in the error: it may be anything.
func checkKey(key string) error {
	switch ns, id, found := strings.Cut(key, ":"); {
	case key == "":
		return fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadKey, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not UTF-8", ErrBadKey)
	case strings.ContainsFunc(key, unicode.IsControl):
		return fmt.Errorf("%w: a control character", ErrBadKey)
	case !found || ns == "" || id == "":
		return fmt.Errorf("%w: want <namespace>:<id>", ErrBadKey)
	}
	return nil
}

// partitionOf is key's partition of a topic with n partitions, as ingest
// and the processor partition keyed records: Kafka's default partitioner
// (murmur2), so a key's records of every topic are on the partition it
// gives.
func partitionOf(key []byte, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: key}, n))
}
