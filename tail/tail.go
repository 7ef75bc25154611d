// Package tail prints the records of a topic as JSON lines, with Avro values
// decoded through the schema registry: what `productstream tail` shows.
package tail

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Options say what to read.
type Options struct {
	Brokers       []string
	RegistryURL   string
	Topic         string
	FromBeginning bool // else only records produced from now on
	ExitAtEnd     bool // stop at the end offsets the topic had at start
	// Idle ends an ExitAtEnd read when nothing arrives for this long before
	// the end offsets (the tail of a compacted topic can be gone). Default 3s.
	Idle time.Duration
	Log  *slog.Logger
}

// Line is one printed record.
type Line struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Key       *string           `json:"key"`
	Value     json.RawMessage   `json:"value"`
	Headers   map[string]string `json:"headers"`
}

// Run writes one JSON line per record to w until ctx ends or, with
// ExitAtEnd, until the end offsets are reached.
func Run(ctx context.Context, o Options, w io.Writer) error {
	if o.Idle == 0 {
		o.Idle = 3 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg, err := sr.NewClient(sr.URLs(o.RegistryURL))
	if err != nil {
		return fmt.Errorf("registry client: %w", err)
	}
	serde := schemas.NewSerde(reg)
	start := kgo.NewOffset().AtEnd()
	if o.FromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(topics.ClientOptions(o.Brokers, o.Log),
		kgo.ConsumeTopics(o.Topic), kgo.ConsumeResetOffset(start),
		// Committed records only; markers are kept so that a partition
		// ending in one is seen to end, and are not printed.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()

	var remaining map[int32]int64 // partition -> end offset still to reach
	if o.ExitAtEnd {
		if remaining, err = toRead(ctx, kadm.NewClient(cl), o.Topic, o.FromBeginning); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	for !o.ExitAtEnd || len(remaining) > 0 {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if o.ExitAtEnd {
			pctx, cancel = context.WithTimeout(ctx, o.Idle)
		}
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if o.ExitAtEnd && fetches.Empty() {
			return nil // idle before the recorded end: the tail was compacted away
		}
		fetches.EachError(func(t string, p int32, err error) {
			o.Log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		var werr error
		fetches.EachRecord(func(r *kgo.Record) {
			if werr == nil && !r.Attrs.IsControl() {
				werr = enc.Encode(line(ctx, serde, r))
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
		if werr != nil {
			return fmt.Errorf("write: %w", werr)
		}
	}
	return nil
}

// toRead returns, per partition with something to read, its end offset.
func toRead(ctx context.Context, adm *kadm.Client, topic string, fromBeginning bool) (map[int32]int64, error) {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	if !fromBeginning {
		return out, nil
	}
	ends.Each(func(e kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, e.Partition); ok && e.Offset > s.Offset {
			out[e.Partition] = e.Offset
		}
	})
	return out, nil
}

func line(ctx context.Context, serde *schemas.Serde, r *kgo.Record) Line {
	l := Line{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Value: json.RawMessage("null"), Headers: map[string]string{}}
	if r.Key != nil {
		k := string(r.Key)
		l.Key = &k
	}
	for _, h := range r.Headers {
		l.Headers[h.Key] = string(h.Value)
	}
	if r.Value != nil {
		v, err := serde.DecodeJSON(ctx, r.Value)
		if err != nil {
			// Not an Avro record we can decode: show the bytes as a string.
			v, _ = json.Marshal(string(r.Value))
		}
		l.Value = v
	}
	return l
}
