package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// Producer writes records to Kafka.
//
// Produce returns nil only after every record was acknowledged by the
// broker (acks=all). On error some records may still have been written:
// the sender retries, and the event id lets readers recognise the repeat.
// It is safe for concurrent use.
type Producer interface {
	Produce(ctx context.Context, records ...*kgo.Record) error
}

// Encoder encodes changes and events as record values (the Confluent wire
// format). It is safe for concurrent use.
type Encoder interface {
	EncodeChange(*schemas.Change) ([]byte, error)
	EncodeEvent(*schemas.Event) ([]byte, error)
}

// ProducerOptions are the kgo options the ingest producer needs on top of
// the seed brokers: acks from all in-sync replicas, idempotence (kgo's
// default), Kafka's murmur2 key partitioning so every client co-partitions,
// and a delivery timeout so that a record is never retried past the time its
// sender was told 503.
func ProducerOptions(deliveryTimeout time.Duration) []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		kgo.ProducerLinger(0),
		// Bound memory while Kafka is away: past this, Produce waits (and
		// the request times out with 503) instead of buffering more.
		kgo.MaxBufferedBytes(256 << 20),
	}
}

// KafkaProducer is the Producer backed by a kgo client.
type KafkaProducer struct{ Client *kgo.Client }

// Produce implements Producer. It stops waiting when ctx ends even while a
// batch is in flight: kgo cannot abandon an idempotent batch it has sent, so
// such a record may still be written after the sender was told 503; its
// event id makes the sender's retry recognisable.
func (p KafkaProducer) Produce(ctx context.Context, records ...*kgo.Record) error {
	acks := make(chan error, len(records))
	for _, r := range records {
		p.Client.Produce(ctx, r, func(_ *kgo.Record, err error) { acks <- err })
	}
	for range records {
		select {
		case err := <-acks:
			if err != nil {
				return fmt.Errorf("%w: kafka did not acknowledge: %w", ErrUnavailable, err)
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: kafka did not acknowledge in time: %w", ErrUnavailable, ctx.Err())
		}
	}
	return nil
}
