package sink

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// Headers a dead letter record adds to the original record's own headers
// (kept, so a replay reads it as it was). Its key and value are the
// original record's, so it can be applied again once the cause is fixed.
const (
	HeaderSink            = "dlq-sink"             // the sink's name
	HeaderClass           = "dlq-error-class"      // decode | permanent
	HeaderReason          = "dlq-reason"           // the error, at most 1000 bytes
	HeaderVersion         = "dlq-version"          // the record's version (-1 when it could not be decoded)
	HeaderOriginTopic     = "dlq-origin-topic"     // where the record was read
	HeaderOriginPartition = "dlq-origin-partition" //
	HeaderOriginOffset    = "dlq-origin-offset"    //
	HeaderDeadAt          = "dlq-dead-at"          // when it was dead-lettered, RFC 3339
)

// deadLetter writes dead records to the DLQ topic and waits until Kafka
// has them all: their offsets are committed right after.
func (r *Runner) deadLetter(ctx context.Context, dead []deadRecord) error {
	if len(dead) == 0 {
		return nil
	}
	out := make([]*kgo.Record, len(dead))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i, d := range dead {
		out[i] = &kgo.Record{Topic: r.cfg.DLQ, Key: d.rec.Key, Value: d.rec.Value, Headers: append(slices.Clone(d.rec.Headers),
			kgo.RecordHeader{Key: HeaderSink, Value: []byte(r.cfg.Name)},
			kgo.RecordHeader{Key: HeaderClass, Value: []byte(d.class)},
			kgo.RecordHeader{Key: HeaderReason, Value: []byte(truncate(d.reason, 1000))},
			kgo.RecordHeader{Key: HeaderVersion, Value: []byte(strconv.FormatInt(d.ver, 10))},
			kgo.RecordHeader{Key: HeaderOriginTopic, Value: []byte(d.rec.Topic)},
			kgo.RecordHeader{Key: HeaderOriginPartition, Value: []byte(strconv.Itoa(int(d.rec.Partition)))},
			kgo.RecordHeader{Key: HeaderOriginOffset, Value: []byte(strconv.FormatInt(d.rec.Offset, 10))},
			kgo.RecordHeader{Key: HeaderDeadAt, Value: []byte(now)},
		)}
		r.log.Error("record dead-lettered", "key", truncate(string(d.rec.Key), 200), "version", d.ver, "class", d.class,
			"reason", truncate(d.reason, 300), "origin", fmt.Sprintf("%s/%d@%d", d.rec.Topic, d.rec.Partition, d.rec.Offset))
	}
	// A DLQ that cannot be written holds the batch: retried like a backend.
	for attempt := 0; ; attempt++ {
		err := r.cl.ProduceSync(ctx, out...).FirstErr()
		if err == nil {
			r.metrics.count(r.cfg.Name, "dlq", len(out))
			return nil
		}
		r.log.Warn("dead letter topic not writable; retrying", "topic", r.cfg.DLQ, "err", err)
		t := time.NewTimer(Backoff(attempt, r.cfg.RetryInitial, r.cfg.RetryMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// DeadLetter is one record of a sink's dead letter topic.
type DeadLetter struct {
	Key     string
	Class   string
	Reason  string
	Version int64
	Origin  Origin
	DeadAt  time.Time
	Offset  int64 // on the dead letter topic
	record  *kgo.Record
}

// parseDeadLetter reads the headers of a dead letter record.
func parseDeadLetter(kr *kgo.Record) DeadLetter {
	d := DeadLetter{Key: string(kr.Key), Offset: kr.Offset, Version: -1, record: kr}
	for _, h := range kr.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderClass:
			d.Class = v
		case HeaderReason:
			d.Reason = v
		case HeaderVersion:
			d.Version, _ = strconv.ParseInt(v, 10, 64)
		case HeaderOriginTopic:
			d.Origin.Topic = v
		case HeaderOriginPartition:
			p, _ := strconv.ParseInt(v, 10, 32)
			d.Origin.Partition = int32(p)
		case HeaderOriginOffset:
			d.Origin.Offset, _ = strconv.ParseInt(v, 10, 64)
		case HeaderDeadAt:
			d.DeadAt, _ = time.Parse(time.RFC3339Nano, v)
		}
	}
	return d
}

// ReadDeadLetters returns the dead letter records present now on topic,
// those of key only when key is not empty.
func ReadDeadLetters(ctx context.Context, client []kgo.Opt, topic, key string) ([]DeadLetter, error) {
	var out []DeadLetter
	_, err := kafka.ReadToEnd(ctx, client, []string{topic}, func(kr *kgo.Record) error {
		if key == "" || string(kr.Key) == key {
			out = append(out, parseDeadLetter(kr))
		}
		return nil
	}, kafka.WithIdleEnd(3*time.Second), kafka.WithTimeout(2*time.Minute))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topic, err)
	}
	return out, nil
}

// Replayed counts what ReplayDeadLetters did.
type Replayed struct {
	Applied, Stale, StillFailing int
}

// ReplayDeadLetters applies every dead letter record of r's sink again,
// through the sink and its version guard (never back onto the source
// topic), after the cause was fixed. A record that fails again stays
// where it is and is counted; nothing is removed from the topic.
func (r *Runner) ReplayDeadLetters(ctx context.Context) (Replayed, error) {
	var res Replayed
	letters, err := ReadDeadLetters(ctx, r.cfg.Client, r.cfg.DLQ, "")
	if err != nil {
		return res, err
	}
	for _, d := range letters {
		rec, err := r.record(ctx, d.record)
		if err != nil {
			res.StillFailing++
			r.log.Warn("dead letter still undecodable", "key", truncate(d.Key, 200), "offset", d.Offset, "err", err)
			continue
		}
		var out []Result
		for attempt := 0; ; attempt++ {
			out, err = r.cfg.Sink.Write(ctx, []Record{rec})
			if err == nil || ctx.Err() != nil || attempt >= 5 {
				break
			}
			time.Sleep(Backoff(attempt, r.cfg.RetryInitial, r.cfg.RetryMax))
		}
		switch {
		case err != nil:
			return res, fmt.Errorf("replay %s: %w", truncate(d.Key, 200), err)
		case out[0].Outcome == Applied:
			res.Applied++
		case out[0].Outcome == Stale:
			res.Stale++
		default:
			res.StillFailing++
			r.log.Warn("dead letter still refused", "key", truncate(d.Key, 200), "offset", d.Offset, "err", out[0].Err)
		}
	}
	return res, nil
}
