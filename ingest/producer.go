package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// Producer writes records to Kafka.
//
// Produce returns nil only after every record was acknowledged by the
// broker (acks=all), and keeps no reference to the records once it did:
// the caller reuses them and their buffers. On error some records may
// still have been written, or be on their way: the caller leaves them be,
// the sender retries, and the event id lets readers recognise the repeat.
// It is safe for concurrent use.
type Producer interface {
	Produce(ctx context.Context, records ...*kgo.Record) error
}

// Encoder encodes changes and events as record values (the Confluent wire
// format), appending each to dst and returning the extended buffer, as
// append does. It is safe for concurrent use.
type Encoder interface {
	AppendChange(dst []byte, c *schemas.Change) ([]byte, error)
	AppendEvent(dst []byte, e *schemas.Event) ([]byte, error)
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

// KafkaProducer is the Producer backed by a kgo client. Build it with
// NewKafkaProducer.
type KafkaProducer struct {
	client *kgo.Client
	// waits holds *ackWait every promise of which has been called, for
	// the next Produce to reuse.
	waits sync.Pool
}

// NewKafkaProducer returns the Producer writing through cl (built with
// ProducerOptions; the caller flushes and closes it).
func NewKafkaProducer(cl *kgo.Client) *KafkaProducer { return &KafkaProducer{client: cl} }

// ackWait gathers the acknowledgements of one Produce: its promise, made
// once, sends each record's result on acks.
type ackWait struct {
	acks    chan error
	promise func(*kgo.Record, error)
}

// maxPooledAcks is the room of a pooled ackWait's channel: a delivery of
// more records has one of its own.
const maxPooledAcks = 8

// wait returns an ackWait with room for n results.
func (p *KafkaProducer) wait(n int) *ackWait {
	if n <= maxPooledAcks {
		if w, ok := p.waits.Get().(*ackWait); ok {
			return w
		}
	}
	w := &ackWait{acks: make(chan error, max(n, maxPooledAcks))}
	w.promise = func(_ *kgo.Record, err error) { w.acks <- err }
	return w
}

// Produce implements Producer. It stops waiting when ctx ends even while a
// batch is in flight: kgo cannot abandon an idempotent batch it has sent, so
// such a record may still be written after the sender was told 503; its
// event id makes the sender's retry recognisable.
func (p *KafkaProducer) Produce(ctx context.Context, records ...*kgo.Record) error {
	w := p.wait(len(records))
	for _, r := range records {
		p.client.Produce(ctx, r, w.promise)
	}
	for range records {
		select {
		case err := <-w.acks:
			if err != nil {
				// Other promises may not have been called yet: w is
				// not reused.
				return fmt.Errorf("%w: kafka did not acknowledge: %w", ErrUnavailable, err)
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: kafka did not acknowledge in time: %w", ErrUnavailable, ctx.Err())
		}
	}
	if cap(w.acks) == maxPooledAcks {
		p.waits.Put(w)
	}
	return nil
}
