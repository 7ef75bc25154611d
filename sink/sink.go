// Package sink fans productstream's compacted state and update streams out to
// the systems users read (search indexes, databases, caches, partner feeds).
//
// A Sink is one backend writer (sink/opensearch, sink/postgres, sink/redis,
// sink/webhook); the Runner is the one Kafka consumer every sink shares: it
// reads a topic in a consumer group of its own, decodes and filters records,
// keeps the highest version per key in a batch (every record, for a history
// sink: Config.History), retries transient failures
// forever with backoff, dead-letters permanent ones, and commits offsets only
// past records that were applied, found stale or dead-lettered.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one keyed, versioned value to apply.
type Record struct {
	// Key is the record key, "<namespace>:<id>": the identity in every backend.
	Key       string
	Namespace string
	ID        string
	// Version orders the writes of one key: a sink never lets a lower
	// version replace a higher one.
	Version int64
	// Deleted marks a tombstone: the backend keeps a deleted marker holding
	// Version (a soft delete), so no older write can bring the key back.
	Deleted bool
	// Doc is the value as JSON (what `productstream tail` prints), valid
	// JSON as the runner's decoder renders it, so a sink may store it as it
	// is; nil when Deleted.
	Doc json.RawMessage
	// UpdatedAt is when the processor produced the value (the record
	// timestamp), for freshness.
	UpdatedAt time.Time
	// Origin is where the record was read, for the dead letter topic.
	Origin Origin

	src *kgo.Record // the record read, for the dead letter topic
}

// Origin locates a record on its Kafka topic.
type Origin struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Outcome is what became of one record.
type Outcome uint8

const (
	// Applied: the backend now holds the record's version (an equal version
	// already held is a successful no-op).
	Applied Outcome = iota + 1
	// Stale: the backend already held a higher version and was left as it was.
	Stale
	// Failed: the record was not applied; Result.Err says why.
	Failed
)

// String names the outcome as metrics and logs do.
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result is one record's outcome.
type Result struct {
	Outcome Outcome
	// Err is set when Outcome is Failed: a Permanent error sends the record
	// to the sink's dead letter topic, any other is retried.
	Err error
}

// Sink writes versioned records to one backend.
//
// Contract, checked for every implementation by the suite in sink/sinktest:
//   - Write is given at most one record per key, and is never called
//     concurrently with itself.
//   - Apply only if newer: a record is written only when the backend holds
//     no version of its key or a lower one. An equal version is Applied
//     without change; a lower one is Stale and never overwrites.
//   - A Deleted record is stored as a deleted marker holding its version,
//     hidden from readers, so no older write can resurrect the key; a later
//     higher version brings it back.
//   - Write returns one Result per record, in batch order, with a nil
//     error, when it could speak for each record (a partial bulk failure
//     included). It returns a non-nil error, and no results, when the batch
//     as a whole failed (connection refused, timeout, 429, 5xx): the runner
//     retries the whole batch, so Write must be safe to repeat.
//   - A record the backend refuses for good (a mapping error, a 4xx) is
//     Failed with a Permanent error.
//   - Write returns promptly when ctx ends.
type Sink interface {
	Write(ctx context.Context, batch []Record) ([]Result, error)
	// Close releases the backend's connections.
	Close() error
}

// Held is what a backend holds for one key.
type Held struct {
	Version int64
	Deleted bool
	Doc     json.RawMessage // nil when Deleted
}

// Reader is a Sink that can say what its backend holds for a key, for
// `sink explain` and the tests. Found is false when the backend holds
// nothing for key.
type Reader interface {
	Held(ctx context.Context, key string) (h Held, found bool, err error)
}

// Permanent marks err as one that retrying cannot fix: the record goes to
// the dead letter topic.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// RetryAfter is an error carrying the backend's requested wait
// (an HTTP Retry-After): the runner waits at least that long before the
// next try.
type RetryAfter struct {
	Err  error
	Wait time.Duration
}

func (r *RetryAfter) Error() string { return r.Err.Error() }
func (r *RetryAfter) Unwrap() error { return r.Err }

// Generations is a Sink whose data lives in numbered generations behind
// the one name readers use (an OpenSearch alias, a PostgreSQL view, a Redis
// pointer key), so a new generation can be built from the start of the
// topic while the live one keeps being written, then switched to at once.
// Generation numbers start at 1; the state is kept in the backend, so
// every process writing the sink sees the same.
type Generations interface {
	// Generations returns the generation readers see and the one being
	// built (0: none).
	Generations(ctx context.Context) (live, building int, err error)
	// Begin creates generation n empty (or reuses it if it already exists)
	// and records it as being built: from then on every writer of the sink
	// writes to it too. The Sink's own Write writes the live generation
	// and, while one is being built, that one as well, and sees a Begin
	// made by another process within Config.GenerationsEvery.
	Begin(ctx context.Context, n int) error
	// At returns a Sink that writes to generation n only, sharing this
	// Sink's connections (closing it closes nothing).
	At(n int) Sink
	// Switch makes generation n the one readers see, in one step no reader
	// can observe half done, and clears the building mark.
	Switch(ctx context.Context, n int) error
	// Drop removes generation n and all it holds (never the live one).
	Drop(ctx context.Context, n int) error
}
