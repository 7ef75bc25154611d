package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// Decoder renders a record value (Confluent wire format Avro) as JSON;
// *schemas.Serde is one.
type Decoder interface {
	DecodeJSON(ctx context.Context, b []byte) (json.RawMessage, error)
}

// Config is what a Runner needs. Every field without a stated default is
// required.
type Config struct {
	// Name names the sink in metrics, logs and dead letter headers.
	Name string
	Sink Sink
	// Client are the base Kafka client options (brokers, logger, dialer).
	Client []kgo.Opt
	// Topic is the topic read; Group the consumer group; DLQ the dead
	// letter topic (created by the caller).
	Topic, Group, DLQ string
	// VersionIsOffset takes each record's offset as its version, for a
	// topic whose records carry none (changes).
	VersionIsOffset bool
	// History keeps every record of a batch instead of only the highest
	// version of each key, for a sink that keeps a history of the topic
	// (an append-only table of changes) rather than each key's latest
	// value. A batch then may hold several records of one key, in offset
	// order (the key's versions rising), and a Deleted record keeps its Doc
	// (the change that deletes). Only sinks built for history accept such
	// batches (postgres.History): the Sink contract promises every other
	// one at most one record per key. History requires VersionIsOffset
	// (NewRunner refuses it without), so a key's versions never repeat.
	History bool
	// Namespaces, when set, keeps only these namespaces' records.
	Namespaces []string
	// MaxRecords and MaxBytes bound a batch; Linger is how long a batch
	// waits to fill once its first record is in.
	MaxRecords int
	MaxBytes   int64
	Linger     time.Duration
	// RetryInitial and RetryMax pace retries: the n-th wait is random in
	// [0, min(RetryMax, RetryInitial*2^n)), and at least a Retry-After.
	RetryInitial, RetryMax time.Duration
	Decoder                Decoder
	// Metrics, when set, receives the runner's counts.
	Metrics *Metrics
	// Log is the sink's logger; the caller names the sink in it.
	Log *slog.Logger
	// GenerationsEvery is how often a Generations sink's state is read,
	// to drop a generation a rebuild replaced, and how long a rebuild waits
	// for every writer to see its new generation (default 2s).
	GenerationsEvery time.Duration
	// DropAfter is how long a generation replaced by a rebuild is kept
	// (for readers still on it) before the runner drops it (default 1m).
	DropAfter time.Duration
	// LagEvery is how often the lag metric is measured (default 10s).
	LagEvery time.Duration
	// DrainTimeout bounds writing the batch in hand once Run's ctx ends
	// (default 10s): the batch is written and committed before the member
	// leaves the group. A write still failing then is cut short, and
	// nothing of its batch committed: the next owner writes it again.
	DrainTimeout time.Duration
}

// ErrConfig surfaces from NewRunner when a required field is missing.
var ErrConfig = errors.New("sink runner config")

// Runner consumes one topic into one Sink.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	cl      *kgo.Client
	metrics *Metrics

	// Generations sinks, owned by watchGenerations: the last state read
	// and the generations replaced by a rebuild, with when to drop them.
	live, building int
	retired        map[int]time.Time
	failing        bool // the backend is failing: we are retrying
}

// Version headers: the processor writes the record's version in this
// header on every state record and tombstone.
const versionHeader = "version"

// NewRunner checks cfg. Nothing connects until Run (or Explain or
// ReplayDeadLetters, which use clients of their own outside the group).
func NewRunner(cfg Config) (*Runner, error) {
	switch {
	case cfg.Name == "", cfg.Sink == nil, cfg.Topic == "", cfg.Group == "", cfg.DLQ == "", cfg.Decoder == nil, cfg.Log == nil:
		return nil, fmt.Errorf("%w: name, sink, topic, group, dlq, decoder and log are required", ErrConfig)
	case cfg.MaxRecords < 1 || cfg.MaxBytes < 1 || cfg.RetryInitial <= 0 || cfg.RetryMax < cfg.RetryInitial:
		return nil, fmt.Errorf("%w: batch and retry bounds must be positive", ErrConfig)
	case cfg.History && !cfg.VersionIsOffset:
		return nil, fmt.Errorf("%w: history needs the offset as the version (VersionIsOffset)", ErrConfig)
	}
	if cfg.GenerationsEvery <= 0 {
		cfg.GenerationsEvery = 2 * time.Second
	}
	if cfg.DropAfter <= 0 {
		cfg.DropAfter = time.Minute
	}
	if cfg.LagEvery <= 0 {
		cfg.LagEvery = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	return &Runner{cfg: cfg, log: cfg.Log, metrics: cfg.Metrics}, nil
}

// Run consumes until ctx ends, then finishes the batch in hand (written
// and committed, within DrainTimeout) and leaves the group, so that
// another member takes its partitions over at once; it returns nil on a
// clean stop. Backend failures never end it.
func (r *Runner) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(append(slices.Clone(r.cfg.Client),
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(r.cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		// A batch is committed by the member that wrote it: a rebalance
		// waits for the batch in hand.
		kgo.BlockRebalanceOnPoll(),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	r.cl = cl
	if r.metrics != nil {
		lctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.watchLag(lctx) }()
		defer func() { stop(); <-done }()
	}
	if gens, ok := r.cfg.Sink.(Generations); ok {
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.watchGenerations(wctx, gens) }()
		defer func() { stop(); <-done }()
	}
	defer func() {
		// A rebalance blocked on the batch in hand would hold up leaving
		// the group.
		cl.AllowRebalance()
		cl.Close()
	}()
	// Batches are written under work, which outlives ctx by DrainTimeout:
	// the batch in hand when ctx ends is finished, not abandoned.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	unhook := context.AfterFunc(ctx, func() { time.AfterFunc(r.cfg.DrainTimeout, stopWork) })
	defer unhook()
	for ctx.Err() == nil {
		polled := r.poll(ctx)
		if err := r.handle(work, polled); err != nil {
			if ctx.Err() != nil {
				r.log.Warn("shutdown cut the batch in hand short; the next owner writes it again",
					"records", len(polled), "after", r.cfg.DrainTimeout, "err", err)
				break
			}
			return err
		}
		r.cl.AllowRebalance()
	}
	return nil
}

// poll returns the next batch: it waits for a first record, then lingers
// until the batch is full by count or bytes. When ctx ends it returns what
// it holds, for Run to finish.
func (r *Runner) poll(ctx context.Context) []*kgo.Record {
	var out []*kgo.Record
	var size int64
	var deadline time.Time
	for len(out) < r.cfg.MaxRecords && size < r.cfg.MaxBytes {
		pctx := ctx
		if len(out) > 0 {
			if r.cfg.Linger == 0 || !time.Now().Before(deadline) {
				break
			}
			var cancel context.CancelFunc
			pctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		fetches := r.cl.PollRecords(pctx, r.cfg.MaxRecords-len(out))
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		for _, rec := range fetches.Records() {
			if len(out) == 0 {
				deadline = time.Now().Add(r.cfg.Linger)
			}
			out = append(out, rec)
			size += int64(len(rec.Key) + len(rec.Value))
		}
		if ctx.Err() != nil {
			break
		}
		if len(out) == 0 {
			// A poll that returned only errors (the group session lost in
			// an outage, for one) blocks rebalances like one with records;
			// with nothing in hand, the member must let the group rejoin,
			// or the next poll waits for records that never come.
			r.cl.AllowRebalance()
		}
	}
	return out
}

// handle decodes, filters and writes one polled batch, dead-letters what
// cannot be applied, and commits past all of it.
func (r *Runner) handle(ctx context.Context, polled []*kgo.Record) error {
	if len(polled) == 0 {
		return nil
	}
	start := time.Now()
	batch, dead := r.decode(ctx, polled)
	failed, err := r.write(ctx, batch)
	if err != nil {
		return err
	}
	dead = append(dead, failed...)
	if err := r.deadLetter(ctx, dead); err != nil {
		return err
	}
	// What was written is committed even when a shutdown began meanwhile.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.cl.CommitRecords(cctx, polled...); err != nil {
		// The batch is applied; a rebalance or an unreachable coordinator
		// leaves the offsets behind, and the next owner writes it again,
		// which the version guard makes harmless.
		r.log.Warn("commit failed; the next owner repeats these writes", "records", len(polled), "err", err)
	}
	r.metrics.batch(r.cfg.Name, time.Since(start))
	return nil
}

// deadRecord is a record to dead-letter with why.
type deadRecord struct {
	rec    *kgo.Record
	class  string // decode | permanent
	reason string
	ver    int64
}

// decode turns polled records into at most one Record per key (the highest
// version; the others are counted stale), or in History mode into one
// Record per record, dropping filtered ones.
func (r *Runner) decode(ctx context.Context, polled []*kgo.Record) ([]Record, []deadRecord) {
	byKey := make(map[string]int, len(polled))
	var batch []Record
	var dead []deadRecord
	for _, kr := range polled {
		rec, err := r.record(ctx, kr)
		if err != nil {
			dead = append(dead, deadRecord{rec: kr, class: "decode", reason: err.Error(), ver: -1})
			continue
		}
		if len(r.cfg.Namespaces) > 0 && !slices.Contains(r.cfg.Namespaces, rec.Namespace) {
			r.metrics.count(r.cfg.Name, "filtered", 1)
			continue
		}
		if r.cfg.History {
			batch = append(batch, rec)
			continue
		}
		if i, ok := byKey[rec.Key]; ok {
			r.metrics.count(r.cfg.Name, "stale", 1)
			if rec.Version > batch[i].Version {
				batch[i] = rec
			}
			continue
		}
		byKey[rec.Key] = len(batch)
		batch = append(batch, rec)
	}
	return batch, dead
}

// record decodes one Kafka record.
func (r *Runner) record(ctx context.Context, kr *kgo.Record) (Record, error) {
	key := string(kr.Key)
	ns, id, ok := strings.Cut(key, ":")
	if !ok || ns == "" || id == "" {
		return Record{}, fmt.Errorf("key %q is not <namespace>:<id>", truncate(key, 200))
	}
	versioned := false // version 0 is a real version: the first offset of changes
	rec := Record{Key: key, Namespace: ns, ID: id, UpdatedAt: kr.Timestamp,
		Origin: Origin{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset}, src: kr}
	if kr.Value != nil {
		doc, err := r.cfg.Decoder.DecodeJSON(ctx, kr.Value)
		if err != nil {
			return Record{}, fmt.Errorf("decode value: %w", err)
		}
		rec.Doc = doc
		// Two top-level fields of a document the decoder rendered, read
		// in one pass without decoding the rest.
		flags := gjson.GetManyBytes(doc, "deleted", "version")
		// An update that deletes carries its document; the sink keeps the
		// delete marker only. A history keeps the change that deletes.
		if flags[0].Bool() {
			rec.Deleted = true
			if !r.cfg.History {
				rec.Doc = nil
			}
		}
		if flags[1].Type == gjson.Number {
			rec.Version, versioned = flags[1].Int(), true
		}
	} else {
		rec.Deleted = true
	}
	for _, h := range kr.Headers {
		if h.Key == versionHeader {
			v, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil {
				return Record{}, fmt.Errorf("version header %q: %w", truncate(string(h.Value), 40), err)
			}
			rec.Version, versioned = v, true
		}
	}
	if r.cfg.VersionIsOffset {
		rec.Version = kr.Offset
		// A dead letter being replayed: its version is its offset on the
		// source topic, not on the dead letter topic.
		if i := slices.IndexFunc(kr.Headers, func(h kgo.RecordHeader) bool { return h.Key == HeaderOriginOffset }); i >= 0 {
			v, err := strconv.ParseInt(string(kr.Headers[i].Value), 10, 64)
			if err != nil {
				return Record{}, fmt.Errorf("dead letter origin offset %q: %w", truncate(string(kr.Headers[i].Value), 40), err)
			}
			rec.Version = v
		}
	}
	if !versioned && !r.cfg.VersionIsOffset {
		return Record{}, errors.New("record carries no version (neither a version header nor a version field)")
	}
	if rec.Version < 0 {
		return Record{}, fmt.Errorf("negative version %d", rec.Version)
	}
	return rec, nil
}

// write applies batch, retrying transient failures until they succeed or
// ctx ends, and returns the records that failed for good.
func (r *Runner) write(ctx context.Context, batch []Record) ([]deadRecord, error) {
	var dead []deadRecord
	for attempt := 0; len(batch) > 0; attempt++ {
		results, err := r.cfg.Sink.Write(ctx, batch)
		if err != nil {
			if werr := r.retry(ctx, attempt, batch, err); werr != nil {
				return nil, werr
			}
			continue
		}
		var again []Record
		var lastErr error
		for i, res := range results {
			rec := batch[i]
			switch {
			case res.Outcome == Applied && rec.Deleted:
				r.metrics.count(r.cfg.Name, "deleted", 1)
				r.metrics.applied(r.cfg.Name, rec.UpdatedAt)
			case res.Outcome == Applied:
				r.metrics.count(r.cfg.Name, "applied", 1)
				r.metrics.applied(r.cfg.Name, rec.UpdatedAt)
			case res.Outcome == Stale:
				r.metrics.count(r.cfg.Name, "stale", 1)
			case IsPermanent(res.Err):
				dead = append(dead, deadRecord{class: "permanent", reason: res.Err.Error(), ver: rec.Version, rec: rec.src})
			default:
				again, lastErr = append(again, rec), res.Err
			}
		}
		if len(again) > 0 {
			if werr := r.retry(ctx, attempt, again, lastErr); werr != nil {
				return nil, werr
			}
		} else {
			r.recovered()
		}
		batch = again
	}
	return dead, nil
}

// watchLag measures the group's lag on the partitions this member owns
// every LagEvery, as kafka.GroupLag does: from the committed offset to the
// last stable one, transaction markers and aborted records not counted. A
// partition another member owns has no series here. (The client's
// partition callbacks are left to Config.Client.)
func (r *Runner) watchLag(ctx context.Context) {
	t := time.NewTicker(r.cfg.LagEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mctx, cancel := context.WithTimeout(ctx, r.cfg.LagEvery)
		lags, err := kafka.GroupLag(mctx, r.cl, r.cfg.Group, r.cfg.Topic)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.log.Debug("measuring lag", "err", err)
			}
			continue
		}
		me, _ := r.cl.GroupMetadata()
		for _, l := range lags {
			if me != "" && l.Member == me {
				r.metrics.lag(r.cfg.Name, l.Partition, l.Records)
			} else {
				r.metrics.forgetLag(r.cfg.Name, l.Partition)
			}
		}
	}
}

// watchGenerations reads a Generations sink's state every
// GenerationsEvery until ctx ends, and drops a generation a rebuild
// replaced once DropAfter has passed since this runner saw the switch.
// (Writing the generation being built is the sink's own Write's job.)
func (r *Runner) watchGenerations(ctx context.Context, gens Generations) {
	t := time.NewTicker(r.cfg.GenerationsEvery)
	defer t.Stop()
	for {
		live, building, err := gens.Generations(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("reading the sink's generations failed; will try again", "err", err)
		case err == nil:
			if building != r.building || live != r.live {
				r.log.Info("sink generations", "live", live, "building", building)
			}
			if r.live != 0 && live != r.live {
				if r.retired == nil {
					r.retired = map[int]time.Time{}
				}
				r.retired[r.live] = time.Now().Add(r.cfg.DropAfter)
			}
			r.live, r.building = live, building
			r.dropRetired(ctx, gens)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dropRetired drops the replaced generations whose grace period is over.
// Several runners may try; dropping a generation already gone is no error.
func (r *Runner) dropRetired(ctx context.Context, gens Generations) {
	for g, at := range r.retired {
		if g == r.live || g == r.building || time.Now().Before(at) {
			continue
		}
		if err := gens.Drop(ctx, g); err != nil {
			r.log.Warn("drop of a replaced generation failed; will try again", "generation", g, "err", err)
			continue
		}
		r.log.Info("replaced generation dropped", "generation", g)
		delete(r.retired, g)
	}
}

// retry logs and waits before the next attempt at batch; it returns an
// error only when ctx ends.
func (r *Runner) retry(ctx context.Context, attempt int, batch []Record, err error) error {
	if !r.failing {
		r.failing = true
		r.log.Warn("sink paused: the backend is failing; retrying until it answers", "records", len(batch), "err", err)
		r.metrics.up(r.cfg.Name, false)
	}
	reason := "error"
	var ra *RetryAfter
	switch {
	case errors.As(err, &ra):
		reason = "throttled"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "timeout"
	}
	r.metrics.retry(r.cfg.Name, reason)
	oldest := batch[0].UpdatedAt
	for _, rec := range batch {
		if rec.UpdatedAt.Before(oldest) {
			oldest = rec.UpdatedAt
		}
	}
	r.metrics.unapplied(r.cfg.Name, oldest)
	wait := Backoff(attempt, r.cfg.RetryInitial, r.cfg.RetryMax)
	if ra != nil {
		wait = max(wait, ra.Wait)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// recovered notes that the backend answers again.
func (r *Runner) recovered() {
	r.metrics.up(r.cfg.Name, true)
	r.metrics.unapplied(r.cfg.Name, time.Time{})
	if r.failing {
		r.failing = false
		r.log.Info("sink resumed: the backend answers again")
	}
}

// Backoff is the wait before retry attempt n (from 0): full jitter, random
// in [0, min(max, initial*2^n)).
func Backoff(n int, initial, maxWait time.Duration) time.Duration {
	ceil := maxWait
	if n < 32 && initial<<n > 0 && initial<<n < maxWait {
		ceil = initial << n
	}
	return rand.N(ceil + 1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
