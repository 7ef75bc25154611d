package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Errors ReadToEnd returns, wrapped with the topics read and the partitions
// and offsets concerned.
var (
	// ErrTimeout surfaces when the WithTimeout bound passed before every
	// partition was read to its end.
	ErrTimeout = errors.New("time bound passed")
	// ErrFetchFailing surfaces when fetches returned only errors for longer
	// than the WithErrorLimit bound; the last fetch error is wrapped too.
	ErrFetchFailing = errors.New("fetches keep failing")
	// ErrTransactionOpen surfaces, with WithSettledTransactions, when a
	// transaction stayed open on a partition to read past the bound.
	ErrTransactionOpen = errors.New("a transaction stayed open")
)

// ReadOption configures ReadToEnd.
type ReadOption func(*readConfig)

type readConfig struct {
	partitions    []int32 // nil: every partition (WithPartitions never sets nil)
	start         map[string]map[int32]int64
	idle          time.Duration
	timeout       time.Duration
	errorLimit    time.Duration
	settle        time.Duration
	progressEvery time.Duration
	progress      func(read int64)
	log           *slog.Logger
}

// WithPartitions reads only these partitions of each topic (a partition a
// topic does not have is skipped; none at all reads nothing). Default:
// every partition.
func WithPartitions(parts ...int32) ReadOption {
	return func(c *readConfig) { c.partitions = append([]int32{}, parts...) }
}

// WithStartOffsets starts the partitions listed (topic -> partition ->
// offset) at these offsets instead of at their log start; an offset before
// the log start reads from the log start, one at or past the end offset
// reads nothing. Default: every partition from its log start.
func WithStartOffsets(offsets map[string]map[int32]int64) ReadOption {
	return func(c *readConfig) { c.start = offsets }
}

// WithIdleEnd ends the read when nothing (no record and no error) arrived
// from the partitions still short of their end offsets for d: records at
// the end were removed by compaction (a tombstone past its retention, or
// transaction markers, in a rolled segment) and nothing more will come.
// Those partitions are taken as read and listed in ReadResult.Idle. Kafka
// never cleans the active segment, so this is rare, and a broker that
// stalls for d cuts the read short: be generous. d <= 0 never ends a read
// for idleness (it then waits for the end offsets, the time bound or ctx).
// Default 30s.
func WithIdleEnd(d time.Duration) ReadOption {
	return func(c *readConfig) { c.idle = d }
}

// WithTimeout bounds the whole read, listing the offsets included: past d,
// ReadToEnd returns an error wrapping ErrTimeout that names the partitions
// short of their end. d <= 0: no bound but ctx. Default: no bound.
func WithTimeout(d time.Duration) ReadOption {
	return func(c *readConfig) { c.timeout = d }
}

// WithErrorLimit is how long fetches that return only errors (a broker
// restarting, a leader moving) are retried, every 100ms, before the read
// fails with ErrFetchFailing. A fetch error is not the end of the log.
// d <= 0 fails on the first such fetch. Default 30s.
func WithErrorLimit(d time.Duration) ReadOption {
	return func(c *readConfig) { c.errorLimit = max(d, 0) }
}

// WithSettledTransactions waits, for at most d, until no transaction is open
// on the partitions to read (their last stable offset reaches their high
// watermark) and reads to that offset; past d, the read fails with
// ErrTransactionOpen. A transaction left open by a producer that died holds
// the last stable offset back until the broker aborts it: reading to the
// offset held back would miss what is committed after it. Use it where
// nobody else should be writing, as a restore does. Default: no wait, read
// to the last stable offset as it is.
func WithSettledTransactions(d time.Duration) ReadOption {
	return func(c *readConfig) { c.settle = d }
}

// WithProgress calls fn with the number of records read so far, after a
// fetch once more than every has passed since the read began or since the
// last call (after every fetch if every <= 0). fn runs on the reading
// goroutine. Default: no progress reports.
func WithProgress(every time.Duration, fn func(read int64)) ReadOption {
	return func(c *readConfig) { c.progressEvery, c.progress = every, fn }
}

// WithLogger logs fetch errors (at warn) to l. Default: discarded.
func WithLogger(l *slog.Logger) ReadOption {
	return func(c *readConfig) { c.log = l }
}

// ReadResult is what ReadToEnd read.
type ReadResult struct {
	// Records is how many records were passed to fn.
	Records int64
	// Missing are the topics that do not exist: they read as empty.
	Missing []string
	// Idle are the partitions WithIdleEnd ended short of their end
	// offsets, by topic and partition.
	Idle []Partition
}

// Partition is a partition a read ended short of its end offset.
type Partition struct {
	Topic     string
	Partition int32
	Next      int64 // the offset after the last one fetched (markers included); the start offset if none
	End       int64 // the end offset the read was to reach
}

func (p Partition) String() string {
	return fmt.Sprintf("%s/%d (at %d, end %d)", p.Topic, p.Partition, p.Next, p.End)
}

// ReadToEnd reads topics from the start of each partition up to the end
// offsets they had when it began, calling fn with each record, in offset
// order within a partition. It returns once every partition is read to its
// end, with how many records it passed to fn.
//
// client are the options of the client ReadToEnd makes and closes (seed
// brokers, logger, TLS, dialer: ClientOptions, say); they must not set up
// consuming. The client reads as a read_committed consumer: the end offsets
// are the last stable offsets (committed data only), records of aborted
// transactions are skipped, and transaction markers, never passed to fn, are
// fetched so that a partition whose last offsets are markers is seen to end.
// A record at or past a partition's end offset is not passed to fn.
//
// fn may be nil (count only). fn runs on the calling goroutine; an error
// from fn ends the read and is returned as it is. A topic that does not
// exist reads as empty and is listed in ReadResult.Missing. ReadResult
// counts what was read when an error is returned, too.
func ReadToEnd(ctx context.Context, client []kgo.Opt, topics []string, fn func(*kgo.Record) error, opts ...ReadOption) (ReadResult, error) {
	cfg := readConfig{idle: 30 * time.Second, errorLimit: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("%w (%s)", ErrTimeout, cfg.timeout))
		defer cancel()
	}
	var res ReadResult
	err := readToEnd(ctx, client, topics, fn, &cfg, &res)
	var fnErr callbackError
	switch {
	case err == nil:
	case errors.As(err, &fnErr):
		err = fnErr.err
	case !errors.Is(err, ErrTimeout) && errors.Is(context.Cause(ctx), ErrTimeout):
		// Listing offsets ends with the context's plain error: say it
		// was the time bound.
		err = fmt.Errorf("read %s to the end: %w: %w", strings.Join(topics, ", "), context.Cause(ctx), err)
	default:
		err = fmt.Errorf("read %s to the end: %w", strings.Join(topics, ", "), err)
	}
	return res, err
}

// callbackError carries an error of ReadToEnd's fn out as it is.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

func readToEnd(ctx context.Context, client []kgo.Opt, topics []string, fn func(*kgo.Record) error, cfg *readConfig, res *ReadResult) error {
	cl, err := kgo.NewClient(append(slices.Clip(client),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()

	left, consume, missing, err := plan(ctx, kadm.NewClient(cl), topics, cfg)
	res.Missing = missing
	if err != nil || len(left) == 0 {
		return err
	}
	cl.AddConsumePartitions(consume)

	lastReport := time.Now()
	var failingSince time.Time
	for len(left) > 0 {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if cfg.idle > 0 {
			pctx, cancel = context.WithTimeout(ctx, cfg.idle)
		}
		fetches := cl.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("%w; short of the end: %s", context.Cause(ctx), short(left))
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return // the idle wait ending, not a fetch error
			}
			cfg.log.Warn("read to end: fetch error", "topic", t, "partition", p, "err", err)
			fetchErr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
		})
		if fetchErr != nil && fetches.Empty() {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) >= cfg.errorLimit {
				return fmt.Errorf("%w for %s: %w", ErrFetchFailing, cfg.errorLimit, fetchErr)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		failingSince = time.Time{}
		if idle && fetches.Empty() {
			res.Idle = short(left)
			return nil
		}
		var fnErr error
		fetches.EachRecord(func(rec *kgo.Record) {
			at := topicPartition{rec.Topic, rec.Partition}
			l, ok := left[at]
			if !ok || fnErr != nil {
				return
			}
			if rec.Offset < l.end && !rec.Attrs.IsControl() {
				if fn != nil {
					if err := fn(rec); err != nil {
						fnErr = callbackError{err}
						return
					}
				}
				res.Records++
			}
			l.next = rec.Offset + 1
			if l.next >= l.end {
				delete(left, at)
				cl.PauseFetchPartitions(map[string][]int32{at.topic: {at.partition}})
			}
		})
		if fnErr != nil {
			return fnErr
		}
		if cfg.progress != nil && (cfg.progressEvery <= 0 || time.Since(lastReport) > cfg.progressEvery) {
			cfg.progress(res.Records)
			lastReport = time.Now()
		}
	}
	return nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// progress is how far a partition short of its end is.
type progress struct{ next, end int64 }

// plan lists the offsets and returns the partitions to read with their end
// offsets, where the client starts consuming them, and the topics missing.
func plan(ctx context.Context, adm *kadm.Client, topics []string, cfg *readConfig) (map[topicPartition]*progress, map[string]map[int32]kgo.Offset, []string, error) {
	ends, err := stableEnds(ctx, adm, topics, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start offsets of %s: %w", strings.Join(topics, ", "), err)
	}
	left := map[topicPartition]*progress{}
	consume := map[string]map[int32]kgo.Offset{}
	var missing []string
	for _, topic := range topics {
		if o, ok := ends.Lookup(topic, -1); ends[topic] == nil || ok && errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, topic)
			continue
		}
		for _, part := range cfg.wanted(ends, topic) {
			end, ok := ends.Lookup(topic, part)
			if !ok {
				continue
			}
			if end.Err != nil {
				return nil, nil, nil, fmt.Errorf("end offset of %s/%d: %w", topic, part, end.Err)
			}
			start, ok := starts.Lookup(topic, part)
			if ok && start.Err != nil {
				return nil, nil, nil, fmt.Errorf("start offset of %s/%d: %w", topic, part, start.Err)
			}
			from, at := start.Offset, kgo.NewOffset().AtStart()
			if o, ok := cfg.start[topic][part]; ok && o > from {
				from, at = o, kgo.NewOffset().At(o)
			}
			if from >= end.Offset {
				continue // nothing to read
			}
			left[topicPartition{topic, part}] = &progress{next: from, end: end.Offset}
			if consume[topic] == nil {
				consume[topic] = map[int32]kgo.Offset{}
			}
			consume[topic][part] = at
		}
	}
	return left, consume, missing, nil
}

// wanted returns the partitions of topic to read: those asked for, else
// every partition listed.
func (c *readConfig) wanted(ends kadm.ListedOffsets, topic string) []int32 {
	if c.partitions != nil {
		return c.partitions
	}
	var parts []int32
	for p := range ends[topic] {
		if p >= 0 {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	return parts
}

// stableEnds lists the last stable offsets of topics and, with
// WithSettledTransactions, waits until they reach the high watermarks of
// the partitions to read.
func stableEnds(ctx context.Context, adm *kadm.Client, topics []string, cfg *readConfig) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(cfg.settle)
	for {
		lso, err := adm.ListCommittedOffsets(ctx, topics...)
		if err != nil {
			return nil, fmt.Errorf("stable offsets of %s: %w", strings.Join(topics, ", "), err)
		}
		if cfg.settle <= 0 {
			return lso, nil
		}
		hwm, err := adm.ListEndOffsets(ctx, topics...)
		if err != nil {
			return nil, fmt.Errorf("end offsets of %s: %w", strings.Join(topics, ", "), err)
		}
		open := ""
		for _, topic := range topics {
			for _, part := range cfg.wanted(lso, topic) {
				l, _ := lso.Lookup(topic, part)
				h, _ := hwm.Lookup(topic, part)
				if l.Offset < h.Offset {
					open = fmt.Sprintf("%s/%d (stable %d, end %d)", topic, part, l.Offset, h.Offset)
				}
			}
		}
		if open == "" {
			return lso, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w on %s past %s", ErrTransactionOpen, open, cfg.settle)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the transaction open on %s: %w", open, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// short lists the partitions still short of their end, in order.
func short(left map[topicPartition]*progress) []Partition {
	out := make([]Partition, 0, len(left))
	for at, l := range left {
		out = append(out, Partition{Topic: at.topic, Partition: at.partition, Next: l.next, End: l.end})
	}
	slices.SortFunc(out, func(a, b Partition) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}
