package timeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/processor"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// ErrBadOption surfaces from New, wrapped with the option, for an option
// value out of range or a missing argument.
var ErrBadOption = errors.New("timeline: bad option")

// ErrBadWindow surfaces from Read for a query whose Until is before its
// Since.
var ErrBadWindow = errors.New("timeline: window ends before it starts")

// Reader reads timelines. It is safe for concurrent use; each Read is
// independent.
type Reader struct {
	cl    *kgo.Client
	serde *schemas.Serde
	names topics.Names
	group string
	cfg   settings
}

type settings struct {
	window          time.Duration
	maxRecords      int64
	timeout         time.Duration
	quiet, maxDelay time.Duration // zero: no schedule known
	fetchBytes      int32
}

// Option configures a Reader.
type Option func(*settings)

// WithWindow is how far back a query without Since reads changes and
// updates. Default 24h.
func WithWindow(d time.Duration) Option { return func(c *settings) { c.window = d } }

// WithMaxRecords bounds each topic's read to n offsets of the key's
// partition, so to at most n records (every key's, for that is what
// reading a partition costs). A window wider than that is read from its
// newest end; the backward search of a compacted topic stops there.
// Either way the Timeline is marked truncated by BoundMaxRecords.
// Default 200,000.
func WithMaxRecords(n int) Option { return func(c *settings) { c.maxRecords = int64(n) } }

// WithTimeout bounds a whole Read. When it passes, Read returns what was
// read so far, marked truncated by BoundTimeout, and no error. Default
// 10 s.
func WithTimeout(d time.Duration) Option { return func(c *settings) { c.timeout = d } }

// WithSchedule gives the processor group's quiet period and max delay
// (processor.quiet_period and processor.max_delay), so that a pending
// entry says when its update is due (Pending.Due). Default: unknown, Due
// is left zero.
func WithSchedule(quiet, maxDelay time.Duration) Option {
	return func(c *settings) { c.quiet, c.maxDelay = quiet, maxDelay }
}

// WithFetchBytes is how many bytes one fetch asks for. Default: cl's
// kgo.FetchMaxPartitionBytes, raised to 4 MiB when it is smaller.
func WithFetchBytes(n int32) Option { return func(c *settings) { c.fetchBytes = n } }

// New returns a Reader of the topics names holds and of group's pending
// changelog.
//
// cl is a client the caller owns and closes; any client of the cluster
// will do. The Reader only sends requests through it (metadata, offsets
// and fetches, read_committed), directly to the leader of the one
// partition it reads, and never consumes or produces with it: cl's
// consumer settings, if any, play no part, and its hooks see the
// requests (HookBrokerWrite, HookBrokerRead) but no fetched batches.
// serde decodes the values, asking its registry for any writer schema it
// does not know.
func New(cl *kgo.Client, serde *schemas.Serde, names topics.Names, group string, opts ...Option) (*Reader, error) {
	if cl == nil {
		return nil, fmt.Errorf("%w: no client", ErrBadOption)
	}
	cfg := settings{window: 24 * time.Hour, maxRecords: 200_000, timeout: 10 * time.Second, fetchBytes: 4 << 20}
	if b, ok := cl.OptValue(kgo.FetchMaxPartitionBytes).(int32); ok {
		cfg.fetchBytes = max(b, cfg.fetchBytes)
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case serde == nil:
		return nil, fmt.Errorf("%w: no serde", ErrBadOption)
	case names.Changes == "":
		return nil, fmt.Errorf("%w: no topic names", ErrBadOption)
	case group == "":
		return nil, fmt.Errorf("%w: no processor group", ErrBadOption)
	case cfg.window <= 0:
		return nil, fmt.Errorf("%w: WithWindow(%s): want > 0", ErrBadOption, cfg.window)
	case cfg.maxRecords <= 0:
		return nil, fmt.Errorf("%w: WithMaxRecords(%d): want > 0", ErrBadOption, cfg.maxRecords)
	case cfg.timeout <= 0:
		return nil, fmt.Errorf("%w: WithTimeout(%s): want > 0", ErrBadOption, cfg.timeout)
	case cfg.quiet < 0 || cfg.maxDelay < cfg.quiet:
		return nil, fmt.Errorf("%w: WithSchedule(%s, %s): want 0 <= quiet <= max delay", ErrBadOption, cfg.quiet, cfg.maxDelay)
	case cfg.fetchBytes <= 0:
		return nil, fmt.Errorf("%w: WithFetchBytes(%d): want > 0", ErrBadOption, cfg.fetchBytes)
	}
	return &Reader{cl: cl, serde: serde, names: names, group: group, cfg: cfg}, nil
}

// Query is what Read reads: one key's path, with its changes and updates
// between Since and Until (inclusive, by record timestamp).
type Query struct {
	Key string // "<namespace>:<id>", at most MaxKeyBytes
	// Since zero: now minus the Reader's window (WithWindow). Until zero:
	// up to the end of each partition as the read begins.
	Since, Until time.Time
}

// errTimeBound is the cause of a Read's context when WithTimeout passed.
var errTimeBound = errors.New("timeline: time bound passed")

// Read reads q's timeline from the key's partition of each topic, the
// four topics at once. It returns an error wrapping ErrBadKey or
// ErrBadWindow for a bad query, ctx's error when ctx ends first, or the
// error of a topic that could not be read. A bound that cut the read short
// (WithTimeout, WithMaxRecords) is no error: the Timeline says so. A
// record whose value cannot be decoded is an entry with Error set.
//
// A Timeline is no snapshot: a processor transaction's commit reaches each
// partition on its own, so a read while one commits may show its update
// but not yet its changelog tombstone (the key both pending and emitted),
// or the reverse.
func (r *Reader) Read(ctx context.Context, q Query) (*Timeline, error) {
	if err := checkKey(q.Key); err != nil {
		return nil, err
	}
	tl := &Timeline{Key: q.Key, Since: q.Since, Until: q.Until, Changes: []Change{}, Updates: []Update{}}
	if tl.Since.IsZero() {
		tl.Since = time.Now().Add(-r.cfg.window)
	}
	if !tl.Until.IsZero() && tl.Until.Before(tl.Since) {
		return nil, fmt.Errorf("%w: since %s, until %s", ErrBadWindow, tl.Since.Format(time.RFC3339Nano), tl.Until.Format(time.RFC3339Nano))
	}
	rctx, cancel := context.WithTimeoutCause(ctx, r.cfg.timeout, errTimeBound)
	defer cancel()

	key := []byte(q.Key)
	pendingKey, _ := processor.PendingKey("product", q.Key)
	pendingTopic := r.names.Pending(r.group)
	scans := []*Scan{&tl.Scans.Changes, &tl.Scans.Products, &tl.Scans.Updates, &tl.Scans.Pending}
	for i, topic := range []string{r.names.Changes, r.names.Products, r.names.Updates, pendingTopic} {
		*scans[i] = Scan{Topic: topic, Partition: -1}
	}
	locs, err := r.locate(rctx, key, r.names.Changes, pendingTopic, r.names.Products, r.names.Updates)
	if err = cut(rctx, err); err != nil {
		err = fmt.Errorf("timeline of %q: %w", q.Key, err)
	}
	if locs == nil { // an error, or the time bound passed first
		return r.end(ctx, rctx, tl, scans, err)
	}
	tl.Partition = locs[r.names.Changes].partition
	for _, s := range scans {
		loc := locs[s.Topic]
		s.Partition, s.Missing = loc.partition, loc.missing
	}

	var (
		wg   sync.WaitGroup
		errs [4]error
	)
	wg.Go(func() {
		errs[0] = r.scanWindow(rctx, locs[r.names.Changes], key, tl.Since, tl.Until, &tl.Scans.Changes, func(rec *kgo.Record) {
			tl.Changes = append(tl.Changes, r.change(rctx, rec))
		})
	})
	wg.Go(func() {
		errs[1] = r.scanWindow(rctx, locs[r.names.Updates], key, tl.Since, tl.Until, &tl.Scans.Updates, func(rec *kgo.Record) {
			tl.Updates = append(tl.Updates, r.update(rctx, rec))
		})
	})
	wg.Go(func() {
		rec, err := r.scanLatest(rctx, locs[r.names.Products], key, &tl.Scans.Products)
		if rec != nil {
			tl.State = r.state(rctx, rec)
		}
		errs[2] = err
	})
	wg.Go(func() {
		rec, err := r.scanLatest(rctx, locs[pendingTopic], pendingKey, &tl.Scans.Pending)
		if rec != nil && rec.Value != nil {
			tl.Pending = r.pending(rec)
		}
		errs[3] = err
	})
	wg.Wait()
	slices.Reverse(tl.Changes)
	slices.Reverse(tl.Updates)
	for i := range errs {
		errs[i] = cut(rctx, errs[i])
	}
	if err = errors.Join(errs[:]...); err != nil {
		err = fmt.Errorf("timeline of %q: %w", q.Key, err)
	}
	return r.end(ctx, rctx, tl, scans, err)
}

// end finishes a read: ctx's error if ctx ended, else err if any, else tl
// with the bounds that cut it short. rctx is the read's context: the scans
// it ended before they completed are marked truncated by the time bound.
func (r *Reader) end(ctx, rctx context.Context, tl *Timeline, scans []*Scan, err error) (*Timeline, error) {
	if ctx.Err() != nil {
		return nil, fmt.Errorf("timeline of %q: %w", tl.Key, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	for _, s := range scans {
		if !s.complete && s.Truncated == "" && timedOut(rctx) {
			s.Truncated = BoundTimeout
		}
		if s.Truncated != "" && !slices.Contains(tl.TruncatedBy, s.Truncated) {
			tl.TruncatedBy = append(tl.TruncatedBy, s.Truncated)
		}
	}
	slices.Sort(tl.TruncatedBy)
	tl.Truncated = len(tl.TruncatedBy) > 0
	return tl, nil
}

// timedOut reports whether the read's time bound ended rctx.
func timedOut(rctx context.Context) bool {
	return rctx.Err() != nil && errors.Is(context.Cause(rctx), errTimeBound)
}

// cut is err, or nil when it is the read's time bound ending rctx: what
// was read until then stands, marked truncated.
func cut(rctx context.Context, err error) error {
	if err != nil && timedOut(rctx) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errTimeBound)) {
		return nil
	}
	return err
}

// sameKey reports whether rec is key's.
func sameKey(rec *kgo.Record, key []byte) bool { return bytes.Equal(rec.Key, key) }
