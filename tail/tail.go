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
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/registry"
	"github.com/productstream/productstream/schemas"
)

// Options say what to read.
type Options struct {
	// Kafka and Registry are how the broker and the registry are reached:
	// their addresses, TLS and credentials.
	Kafka         kafka.Connection
	Registry      registry.Connection
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
	reg, err := o.Registry.NewClient()
	if err != nil {
		return err
	}
	serde := schemas.NewSerde(reg)
	enc := json.NewEncoder(w)
	emit := func(r *kgo.Record) error {
		if err := enc.Encode(line(ctx, serde, r)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if o.ExitAtEnd {
		return toEnd(ctx, o, emit)
	}
	start := kgo.NewOffset().AtEnd()
	if o.FromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(o.kafkaOpts(),
		kgo.ConsumeTopics(o.Topic), kgo.ConsumeResetOffset(start),
		// Committed records only.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			o.Log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		var werr error
		fetches.EachRecord(func(r *kgo.Record) {
			if werr == nil {
				werr = emit(r)
			}
		})
		if werr != nil {
			return werr
		}
	}
}

// toEnd prints, from the beginning, the records present at start (up to
// the last stable offsets), or, without FromBeginning, checks that the
// topic exists: only records produced from now on are asked for, and none
// of them is present at start.
func toEnd(ctx context.Context, o Options, emit func(*kgo.Record) error) error {
	if !o.FromBeginning {
		return exists(ctx, o)
	}
	read, err := kafka.ReadToEnd(ctx, o.kafkaOpts(), []string{o.Topic}, emit,
		// Nothing for Idle before the end offsets: the tail of a
		// compacted topic can be gone.
		kafka.WithIdleEnd(o.Idle), kafka.WithLogger(o.Log))
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return err
	case len(read.Missing) > 0:
		return fmt.Errorf("end offsets of %s: %w", o.Topic, kerr.UnknownTopicOrPartition)
	}
	return nil
}

// exists returns an error if o.Topic does not exist.
func exists(ctx context.Context, o Options) error {
	cl, err := kgo.NewClient(o.kafkaOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, o.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("end offsets of %s: %w", o.Topic, err)
	}
	return nil
}

// kafkaOpts are the options of o's Kafka clients, logging to o.Log.
func (o Options) kafkaOpts() []kgo.Opt {
	c := o.Kafka
	c.Log = o.Log
	return c.Options()
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
