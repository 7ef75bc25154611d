package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// Explanation is the answer to "why is this product (not) there?" for one
// key and one sink.
type Explanation struct {
	Key       string
	Partition int32
	// Latest is the key's last record on the source topic; nil when the
	// topic holds none.
	Latest *Record
	// Committed is the sink group's committed offset on the key's
	// partition (-1: none yet).
	Committed int64
	// Held is what the backend holds; nil when it holds nothing or cannot
	// say (HeldKnown false: the sink is not a Reader).
	Held      *Held
	HeldKnown bool
	// HeldErr is why the backend could not be read, if it could not.
	HeldErr error
	// Dead are the key's dead letter records.
	Dead []DeadLetter
	// Verdict is the one-line conclusion.
	Verdict string
}

// Explain reads, for key: its latest record on the sink's source topic (the
// key's partition only), the group's committed offset there, what the
// backend holds and the key's dead letter records, and concludes.
func (r *Runner) Explain(ctx context.Context, key string) (Explanation, error) {
	ex := Explanation{Key: key, Committed: -1}
	ns, _, _ := strings.Cut(key, ":")
	cl, err := kgo.NewClient(r.cfg.Client...)
	if err != nil {
		return ex, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	parts, err := adm.ListEndOffsets(ctx, r.cfg.Topic)
	if err == nil {
		err = parts.Error()
	}
	if err != nil {
		return ex, fmt.Errorf("partitions of %s: %w", r.cfg.Topic, err)
	}
	n := len(parts[r.cfg.Topic])
	ex.Partition = int32(kgo.StickyKeyPartitioner(nil).ForTopic(r.cfg.Topic).Partition(&kgo.Record{Key: []byte(key)}, n))

	var latest *kgo.Record
	_, err = kafka.ReadToEnd(ctx, r.cfg.Client, []string{r.cfg.Topic}, func(kr *kgo.Record) error {
		if string(kr.Key) == key {
			latest = kr
		}
		return nil
	}, kafka.WithPartitions(ex.Partition), kafka.WithIdleEnd(3*time.Second), kafka.WithTimeout(5*time.Minute))
	if err != nil {
		return ex, fmt.Errorf("read %s: %w", r.cfg.Topic, err)
	}
	if latest != nil {
		rec, err := r.record(ctx, latest)
		if err != nil {
			return ex, fmt.Errorf("decode the latest record: %w", err)
		}
		ex.Latest = &rec
	}

	offsets, err := adm.FetchOffsets(ctx, r.cfg.Group)
	if err != nil && !errors.Is(err, kadm.ErrEmpty) {
		return ex, fmt.Errorf("offsets of group %s: %w", r.cfg.Group, err)
	}
	if o, ok := offsets.Lookup(r.cfg.Topic, ex.Partition); ok && o.Err == nil {
		ex.Committed = o.At
	}

	if rd, ok := r.cfg.Sink.(Reader); ok {
		h, found, err := rd.Held(ctx, key)
		ex.HeldKnown, ex.HeldErr = err == nil, err
		if found && err == nil {
			ex.Held = &h
		}
	}
	if ex.Dead, err = ReadDeadLetters(ctx, r.cfg.Client, r.cfg.DLQ, key); err != nil {
		return ex, err
	}
	ex.Verdict = r.verdict(ex, ns)
	return ex, nil
}

// verdict concludes an Explanation in one line.
func (r *Runner) verdict(ex Explanation, ns string) string {
	if len(r.cfg.Namespaces) > 0 && !slices.Contains(r.cfg.Namespaces, ns) {
		return fmt.Sprintf("filtered out: namespace %q is not in the sink's namespaces", ns)
	}
	l := ex.Latest
	if l == nil {
		if ex.Held != nil {
			return fmt.Sprintf("not on %s (compacted away or never written); the backend holds version %d", r.cfg.Topic, ex.Held.Version)
		}
		return fmt.Sprintf("not on %s: nothing was ever written for this key", r.cfg.Topic)
	}
	if ex.Committed <= l.Origin.Offset {
		return fmt.Sprintf("not consumed yet: version %d is at offset %d of partition %d, the sink has committed up to %d", l.Version, l.Origin.Offset, ex.Partition, ex.Committed)
	}
	for _, d := range slices.Backward(ex.Dead) {
		if d.Version == l.Version || d.Version < 0 && d.Origin.Offset == l.Origin.Offset {
			return fmt.Sprintf("in the dead letter topic because %s (%s error, version %d)", d.Reason, d.Class, d.Version)
		}
	}
	switch h := ex.Held; {
	case ex.HeldErr != nil:
		return fmt.Sprintf("unknown: version %d was consumed, but the backend could not be read: %v", l.Version, ex.HeldErr)
	case !ex.HeldKnown:
		return fmt.Sprintf("delivered: version %d was consumed and not dead-lettered (this sink cannot say what the receiver holds)", l.Version)
	case h == nil:
		return fmt.Sprintf("missing: version %d was consumed but the backend holds nothing for the key (removed outside productstream?)", l.Version)
	case h.Version > l.Version:
		return fmt.Sprintf("stale write refused: the backend holds version %d, newer than version %d on %s", h.Version, l.Version, r.cfg.Topic)
	case h.Version < l.Version:
		return fmt.Sprintf("missing: version %d was consumed but the backend holds version %d (changed outside productstream?)", l.Version, h.Version)
	case h.Deleted:
		return fmt.Sprintf("deleted at version %d", h.Version)
	}
	return fmt.Sprintf("applied: the backend holds version %d, the latest on %s", l.Version, r.cfg.Topic)
}
