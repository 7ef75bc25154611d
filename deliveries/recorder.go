package deliveries

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/ingest"
)

// ErrInvalid surfaces from NewRecorder and NewFeed when an argument or an
// option cannot work (no client, no topic, a window under a minute, ...).
var ErrInvalid = errors.New("deliveries: invalid argument")

// ProducerOptions are the kgo options of a Recorder's client, on top of the
// seed brokers and the batch compression: a client of its own, so that a
// slow or absent deliveries topic never delays the edge's answers.
// Records linger at most 20ms, so a console sees a delivery well within a
// second; at most 10,000 records (16 MiB) wait in memory, and a record is
// given up after 5 failed attempts or 30s (acks from all in-sync
// replicas, not idempotent: a retry may write a record twice). Keys are
// partitioned with Kafka's murmur2, so one source's records keep their
// order.
func ProducerOptions() []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(20 * time.Millisecond),
		kgo.MaxBufferedRecords(10_000),
		kgo.MaxBufferedBytes(16 << 20),
		kgo.RecordRetries(5),
		kgo.RecordDeliveryTimeout(30 * time.Second),
	}
}

// Recorder is the ingest.Observer that writes a Record of every delivery
// to the deliveries topic, keyed by the source's name. Observe never
// blocks and never fails a delivery: a record the client cannot buffer,
// or that Kafka does not take, is dropped, counted in
// productstream_ingest_delivery_log_dropped_total and logged at most once
// a minute. It is safe for concurrent use. Build it with NewRecorder.
type Recorder struct {
	cl       *kgo.Client
	topic    string
	instance string
	log      *slog.Logger
	dropped  prometheus.Counter
	unlogged atomic.Int64 // records dropped since the last warning
	lastLog  atomic.Int64 // when the last warning was logged, Unix ns
	// pool holds *logRecord the client is done with, for the next
	// deliveries to reuse with their buffers.
	pool sync.Pool
}

// logRecord is a record of the deliveries topic with the buffers its key
// and value are written to, and its promise, made once: the client calls
// it when it is done with the record, which then goes back to the pool.
type logRecord struct {
	kgo.Record
	key, value []byte
	promise    func(*kgo.Record, error)
}

// maxPooledRecord bounds the value buffer a pooled record keeps.
const maxPooledRecord = 16 << 10

var _ ingest.Observer = (*Recorder)(nil)

// recordSize and writtenSize are about the JSON sizes of a Record listing
// nothing and of each record it lists, for its buffer: most fit at once.
const recordSize, writtenSize = 320, 144

// dropLogEvery spaces the warnings about dropped records.
const dropLogEvery = time.Minute

// NewRecorder returns the Recorder writing to topic through cl (built
// with ProducerOptions; the caller flushes and closes it), with instance
// naming this process in every record ("host:pid"), log receiving the
// warnings (nil: discarded) and the dropped counter registered with reg.
func NewRecorder(cl *kgo.Client, topic, instance string, log *slog.Logger, reg prometheus.Registerer) (*Recorder, error) {
	switch {
	case cl == nil:
		return nil, fmt.Errorf("%w: no Kafka client", ErrInvalid)
	case topic == "":
		return nil, fmt.Errorf("%w: no topic", ErrInvalid)
	case reg == nil:
		return nil, fmt.Errorf("%w: no metrics registerer", ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Recorder{cl: cl, topic: topic, instance: truncate(instance, MaxString), log: log,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "productstream_ingest_delivery_log_dropped_total",
			Help: "Records of deliveries not written to the deliveries topic: the client's buffer was full or Kafka did not take them.",
		})}
	if err := reg.Register(r.dropped); err != nil {
		return nil, fmt.Errorf("register the delivery log's metrics: %w", err)
	}
	return r, nil
}

// Observe writes d's Record, without waiting for Kafka.
func (r *Recorder) Observe(d ingest.Delivery) {
	rec := recordOf(d, r.instance)
	lr := r.logRecord()
	v, err := rec.appendJSON(slices.Grow(lr.value[:0], recordSize+len(rec.Written)*writtenSize))
	if err != nil {
		r.drop(err)
		r.pool.Put(lr)
		return
	}
	lr.value, lr.key = v, append(lr.key[:0], d.Source...)
	lr.Record = kgo.Record{Topic: r.topic, Key: lr.key, Value: v}
	r.cl.TryProduce(context.Background(), &lr.Record, lr.promise)
}

// logRecord returns a record from the pool, or a new one.
func (r *Recorder) logRecord() *logRecord {
	if lr, ok := r.pool.Get().(*logRecord); ok {
		return lr
	}
	lr := &logRecord{}
	lr.promise = func(_ *kgo.Record, err error) { r.produced(lr, err) }
	return lr
}

// produced is the promise of every record: it runs on the client's
// promise goroutine (or in TryProduce, when the client's buffer is full)
// and must not block. The client is done with the record: it goes back
// to the pool.
func (r *Recorder) produced(lr *logRecord, err error) {
	if err != nil {
		r.drop(err)
	}
	if cap(lr.value) <= maxPooledRecord {
		lr.Record = kgo.Record{}
		r.pool.Put(lr)
	}
}

// drop counts a record lost and warns, at most once per dropLogEvery.
func (r *Recorder) drop(err error) {
	r.dropped.Inc()
	r.unlogged.Add(1)
	now, last := time.Now().UnixNano(), r.lastLog.Load()
	if last != 0 && now-last < int64(dropLogEvery) || !r.lastLog.CompareAndSwap(last, now) {
		return
	}
	r.log.Warn("records of deliveries dropped", "topic", r.topic, "dropped", r.unlogged.Swap(0), "err", err)
}
