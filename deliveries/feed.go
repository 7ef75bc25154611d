package deliveries

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/ingest"
)

// Feed reads the deliveries topic and keeps what a console shows of it:
// the most recent records (Recent), per-source counts by minute over a
// window (Sources) and the ingest processes heard from (Instances). Build
// it with NewFeed, run it with Run; its query methods are safe for
// concurrent use, while it runs and after.
type Feed struct {
	cl     *kgo.Client
	topic  string
	cfg    feedConfig
	spare  int // buckets per source: the window's minutes and one ahead
	ready  atomic.Bool
	runs   atomic.Bool
	stats  struct{ read, malformed, untracked atomic.Int64 }
	warned atomic.Int64 // when the last warning was logged, Unix ns

	mu        sync.RWMutex
	ring      []Record // at most cfg.keep; once full, head is the oldest
	head      int
	sources   map[string]*sourceStats
	instances map[string]time.Time // instance -> latest record time
}

// FeedOption configures a Feed.
type FeedOption func(*feedConfig)

type feedConfig struct {
	keep   int
	window time.Duration
	log    *slog.Logger
	now    func() time.Time
	idle   time.Duration
}

// WithKeep is how many of the most recent records Recent chooses from
// (default 10,000; at least 1).
func WithKeep(n int) FeedOption { return func(c *feedConfig) { c.keep = n } }

// WithWindow is how far back the feed starts reading, and the span of its
// per-minute counts: a whole number of minutes, at least one (default 15
// minutes).
func WithWindow(d time.Duration) FeedOption { return func(c *feedConfig) { c.window = d } }

// WithLogger receives the feed's warnings (offsets that cannot be listed,
// fetch errors, malformed records), at most one a minute (default:
// discarded).
func WithLogger(l *slog.Logger) FeedOption { return func(c *feedConfig) { c.log = l } }

// withClock replaces the clock, for tests.
func withClock(now func() time.Time) FeedOption { return func(c *feedConfig) { c.now = now } }

// Bounds of what a Feed keeps.
const (
	// maxValue bounds a record value the feed decodes: a Recorder's
	// largest is a fraction of it.
	maxValue = 64 << 10
	// keptWritten bounds the records written a kept Record lists
	// (Record.Records says how many there were).
	keptWritten = 10
	// maxSources and maxInstances bound the sources counted and the
	// instances remembered; maxReasons the reasons counted apart in one
	// minute of one source.
	maxSources   = 1000
	maxInstances = 256
	maxReasons   = 32
	// warnEvery spaces the feed's warnings.
	warnEvery = time.Minute
)

// NewFeed returns the Feed of topic read through cl: a client with its
// seed brokers and logger but no consuming set up, which the Feed consumes
// from directly (no group), every partition from the start of the window.
// The caller closes cl after Run returned.
func NewFeed(cl *kgo.Client, topic string, opts ...FeedOption) (*Feed, error) {
	cfg := feedConfig{keep: 10_000, window: 15 * time.Minute, now: time.Now, idle: 15 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cl == nil:
		return nil, fmt.Errorf("%w: no Kafka client", ErrInvalid)
	case topic == "":
		return nil, fmt.Errorf("%w: no topic", ErrInvalid)
	case cfg.keep < 1:
		return nil, fmt.Errorf("%w: keep %d records, want at least 1", ErrInvalid, cfg.keep)
	case cfg.window < time.Minute || cfg.window%time.Minute != 0:
		return nil, fmt.Errorf("%w: window %s, want a whole number of minutes", ErrInvalid, cfg.window)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Feed{cl: cl, topic: topic, cfg: cfg, spare: int(cfg.window/time.Minute) + 1,
		sources: map[string]*sourceStats{}, instances: map[string]time.Time{}}, nil
}

// Ready says the feed has read the topic up to the end offsets it had when
// Run started: until then a console should say it is still loading. A
// partition that gives nothing for 15s while short of its end (its last
// offsets are transaction markers) is taken as read.
func (f *Feed) Ready() bool { return f.ready.Load() }

// Stats are counts of what a feed read.
type Stats struct {
	// Read is how many records it kept.
	Read int64
	// Malformed is how many records it skipped: not JSON, larger than
	// 64 KiB, without a time, or with an unknown outcome.
	Malformed int64
	// Untracked is how many records it kept but could not count by
	// source: more than 1000 sources were active in the window.
	Untracked int64
}

// Stats returns what the feed read so far.
func (f *Feed) Stats() Stats {
	return Stats{Read: f.stats.read.Load(), Malformed: f.stats.malformed.Load(), Untracked: f.stats.untracked.Load()}
}

// errNoTopic is why a feed waits: the topic does not exist (yet).
var errNoTopic = errors.New("topic does not exist")

// Run reads the topic until ctx ends, then returns nil; it returns an error
// wrapping kgo.ErrClientClosed if the client is closed first. It rides out
// broker outages and a topic that does not exist yet, retrying; partitions
// added to the topic after it started are not read. It may be called once.
func (f *Feed) Run(ctx context.Context) error {
	if !f.runs.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Run called twice", ErrInvalid)
	}
	left := f.start(ctx)
	for ctx.Err() == nil {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if !f.ready.Load() {
			pctx, cancel = context.WithTimeout(ctx, f.cfg.idle)
		}
		fetches := f.cl.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			break
		}
		if fetches.IsClientClosed() {
			return fmt.Errorf("deliveries feed: %w", kgo.ErrClientClosed)
		}
		failed := false
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return // the idle wait ending
			}
			failed = true
			f.warn("deliveries feed: fetch failed; retrying", "topic", topic, "partition", p, "err", err)
		})
		if failed && fetches.Empty() {
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		var batch []Record
		fetches.EachRecord(func(rec *kgo.Record) {
			if rec.Topic != f.topic {
				return
			}
			if end, ok := left[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(left, rec.Partition)
			}
			if r, ok := f.decode(rec); ok {
				batch = append(batch, r)
			}
		})
		f.add(batch)
		if len(left) == 0 || idle && fetches.Empty() && f.answers(ctx) {
			f.ready.Store(true)
		}
	}
	return nil
}

// start lists the topic's offsets, retrying until it can, and starts
// consuming every partition at the start of the window. It returns the end
// offsets of the partitions with records to read before the feed is ready.
func (f *Feed) start(ctx context.Context) map[int32]int64 {
	adm := kadm.NewClient(f.cl)
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		from := f.cfg.now().Add(-f.cfg.window).UnixMilli()
		left, consume, err := f.plan(ctx, adm, from)
		if err == nil {
			f.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{f.topic: consume})
			if len(left) == 0 {
				f.ready.Store(true)
			}
			return left
		}
		if ctx.Err() != nil {
			return nil
		}
		f.warn("deliveries feed: cannot list offsets; retrying", "topic", f.topic, "in", wait, "err", err)
		sleep(ctx, wait)
	}
}

// answers says the broker answers a listing of the topic's offsets: an
// idle partition is taken as read only then, not while the broker is away.
func (f *Feed) answers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.idle)
	defer cancel()
	ends, err := kadm.NewClient(f.cl).ListEndOffsets(ctx, f.topic)
	return err == nil && ends.Error() == nil
}

// plan lists where each partition starts (the first record at or after
// from) and ends.
func (f *Feed) plan(ctx context.Context, adm *kadm.Client, from int64) (map[int32]int64, map[int32]kgo.Offset, error) {
	ends, err := adm.ListEndOffsets(ctx, f.topic)
	if err != nil {
		return nil, nil, fmt.Errorf("end offsets: %w", err)
	}
	if o, ok := ends.Lookup(f.topic, -1); ends[f.topic] == nil || ok && errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
		return nil, nil, errNoTopic
	}
	starts, err := adm.ListOffsetsAfterMilli(ctx, from, f.topic)
	if err != nil {
		return nil, nil, fmt.Errorf("offsets after %d: %w", from, err)
	}
	left, consume := map[int32]int64{}, map[int32]kgo.Offset{}
	for p, end := range ends[f.topic] {
		start, ok := starts.Lookup(f.topic, p)
		switch {
		case end.Err != nil:
			return nil, nil, fmt.Errorf("end offset of partition %d: %w", p, end.Err)
		case !ok || start.Err != nil:
			return nil, nil, fmt.Errorf("start offset of partition %d: %w", p, start.Err)
		}
		consume[p] = kgo.NewOffset().AfterMilli(from)
		if start.Offset < end.Offset {
			left[p] = end.Offset
		}
	}
	return left, consume, nil
}

// decode makes a kept Record of rec, or counts it malformed.
func (f *Feed) decode(rec *kgo.Record) (Record, bool) {
	var r Record
	err := fmt.Errorf("larger than %d bytes", maxValue)
	if len(rec.Value) <= maxValue {
		err = json.Unmarshal(rec.Value, &r)
	}
	if err == nil && r.Time.IsZero() {
		err = errors.New("no time")
	}
	if err == nil && r.Outcome != ingest.Accepted && r.Outcome != ingest.Duplicate && r.Outcome != ingest.Refused {
		err = errors.New("unknown outcome")
	}
	if err != nil {
		f.stats.malformed.Add(1)
		f.warn("deliveries feed: malformed record skipped", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return Record{}, false
	}
	r.bound(keptWritten)
	return r, true
}

// add keeps batch, in the order read.
func (f *Feed) add(batch []Record) {
	if len(batch) == 0 {
		return
	}
	now := f.cfg.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range batch {
		if len(f.ring) < f.cfg.keep {
			f.ring = append(f.ring, r)
		} else {
			f.ring[f.head] = r
			f.head = (f.head + 1) % f.cfg.keep
		}
		f.stats.read.Add(1)
		f.seen(r, now)
		if !f.count(r, now) {
			f.stats.untracked.Add(1)
		}
	}
}

// seen remembers r's instance.
func (f *Feed) seen(r Record, now time.Time) {
	if r.Instance == "" || r.Time.After(now.Add(time.Minute)) {
		return // no name, or a clock far ahead: not evidence of a live instance
	}
	if last, ok := f.instances[r.Instance]; ok || len(f.instances) < maxInstances {
		if r.Time.After(last) {
			f.instances[r.Instance] = r.Time
		}
		return
	}
	oldest, at := "", r.Time
	for name, last := range f.instances {
		if last.Before(at) {
			oldest, at = name, last
		}
	}
	if at.Before(r.Time) {
		delete(f.instances, oldest)
		f.instances[r.Instance] = r.Time
	}
}

// Filter selects records for Recent. Zero fields select everything.
type Filter struct {
	Source  string // the source's name
	Outcome string // accepted, duplicate or refused
	Reason  string // a refusal's reason
	Status  int    // the HTTP status answered
	// Since and Until bound the records' times: Since <= time < Until.
	Since, Until time.Time
	// Limit is how many records at most (default 100, at most 1000).
	Limit int
}

// Limits of Filter.Limit.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

func (q Filter) match(r *Record) bool {
	return (q.Source == "" || r.Source == q.Source) && (q.Outcome == "" || string(r.Outcome) == q.Outcome) &&
		(q.Reason == "" || string(r.Reason) == q.Reason) && (q.Status == 0 || r.Status == q.Status) &&
		(q.Since.IsZero() || !r.Time.Before(q.Since)) && (q.Until.IsZero() || r.Time.Before(q.Until))
}

// Recent returns the kept records q selects, newest first (by their time;
// in the order read when times are equal).
func (f *Feed) Recent(q Filter) []Record {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	f.mu.RLock()
	var out []Record
	for i := len(f.ring) - 1; i >= 0; i-- { // newest read first
		r := &f.ring[(f.head+i)%len(f.ring)]
		if q.match(r) {
			c := *r
			c.Written = slices.Clone(r.Written)
			out = append(out, c)
		}
	}
	f.mu.RUnlock()
	slices.SortStableFunc(out, func(a, b Record) int { return b.Time.Compare(a.Time) })
	return out[:min(len(out), limit)]
}

// Instances lists the ingest processes whose records of the window the
// feed read, sorted.
func (f *Feed) Instances() []string {
	since := f.cfg.now().Add(-f.cfg.window)
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for name, last := range f.instances {
		if !last.Before(since) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// warn logs at most once per warnEvery.
func (f *Feed) warn(msg string, args ...any) {
	now, last := time.Now().UnixNano(), f.warned.Load()
	if last != 0 && now-last < int64(warnEvery) || !f.warned.CompareAndSwap(last, now) {
		return
	}
	f.cfg.log.Warn(msg, args...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
