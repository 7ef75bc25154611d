// Package processor consumes the changes topic in a consumer group, merges
// each change into its product's state, coalesces bursts on the wall clock
// (a quiet period, capped by a max delay), and writes the compacted products
// topic and the collapsed updates topic.
//
// Two modes share that core:
//
//   - Exactly once (the default): each cycle runs in one Kafka transaction
//     that writes the outputs, the changes to the pending buffer's changelog
//     (<prefix><group>-pending, compacted), and the offsets of everything
//     consumed. A crash or an aborted transaction loses nothing and applies
//     nothing twice: the next owner restores products and the pending buffer
//     as of the last committed transaction. Readers use read_committed.
//   - At least once, for brokers without transactions: offsets are committed
//     only up to the first change whose product has not been written yet, so
//     nothing is lost. A change at or below a key's restored version is
//     skipped, so state never applies a change twice. But a crash between
//     writing and committing can repeat an update, and a product's state and
//     its update are not written atomically. Writes are pipelined: a key
//     counts as written once Kafka acknowledged its cycle, while later polls
//     are already being processed.
//
// In both modes every state and update carries the offset of the last change
// applied (its version), which only grows per key.
package processor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/jsondepth"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Config configures a Processor. Brokers, Topics, Group, QuietPeriod,
// MaxDelay and Serde are required.
type Config struct {
	Brokers     []string
	Topics      topics.Names
	Group       string
	QuietPeriod time.Duration
	MaxDelay    time.Duration
	Serde       *schemas.Serde
	Log         *slog.Logger
	// ExactlyOnce selects the transactional mode (see the package doc).
	ExactlyOnce bool
	// MaxPendingKeys bounds the buffered keys; past it the keys closest to
	// their deadline are flushed early (default 1,000,000).
	MaxPendingKeys int
	// MaxJSONDepth sends a change whose raw JSON nests deeper than this
	// to the dead letter topic, with ErrRawTooDeep, instead of merging it
	// (default jsondepth.Default).
	MaxJSONDepth int
	// TopicSpec creates the pending changelog in exactly-once mode.
	TopicSpec topics.Spec
	// Compression names the codec of the batches the processor writes (see
	// topics.Compression; "" is lz4).
	Compression string
	// RestoreIdle ends a partition's restore when a state topic has sent
	// nothing (and no error) for this long before its end offset was
	// reached: records at the end removed by compaction, which is rare
	// (Kafka never cleans the active segment). Default 30s: a broker that
	// stalls longer than this would cut a restore short, so generous.
	RestoreIdle time.Duration
}

// Processor is one member of the processor consumer group. Build it with
// New, run it with Run.
type Processor struct {
	cfg     Config
	log     *slog.Logger
	pending string // the pending changelog topic (exactly-once mode)
	eos     bool   // exactly-once mode; set before the client exists, so rebalance callbacks may read it
	client  *kgo.Client
	sess    *kgo.GroupTransactSession // exactly-once mode; not for rebalance callbacks, which may run before it is set
	now     func() time.Time

	mu      sync.Mutex // held by the loop while it processes, and by rebalance callbacks
	parts   map[int32]*partition
	co      *coalescer
	dirty   map[string]int32 // exactly-once: keys whose pending entry changed this cycle
	derived []*kgo.Record    // derived changes to write this cycle
	dlq     []*kgo.Record    // poison records to write this cycle
	forced  int64            // keys flushed early because of MaxPendingKeys

	inflight     []*cycle    // at least once: cycles sent and not yet reaped, oldest first
	rebalancing  atomic.Bool // a revoke or loss callback is waiting for mu or running
	commitFailed atomic.Bool // at least once: an asynchronous commit failed; commit every watermark again

	stateTopics map[string]string // resource ("" too) -> its state topic
}

// partition is the state of one assigned partition of the changes topic.
type partition struct {
	states    map[string]*entry
	next      int64      // offset after the last consumed record; -1 before any
	queue     []*pending // buffered keys in the order of their first offset
	committed int64
}

// watermark is the offset that is safe to commit: the first buffered change
// not yet written, else everything consumed.
func (pt *partition) watermark() int64 {
	for len(pt.queue) > 0 && pt.queue[0].flushed {
		pt.queue[0] = nil
		pt.queue = pt.queue[1:]
	}
	if len(pt.queue) > 0 {
		return pt.queue[0].first
	}
	return pt.next
}

// pendingPartitioner writes a pending changelog record to the partition of
// the changes it buffers (set on the record): its key carries the
// resource's tag, so hashing it would pick another partition than the
// record key's. Every other record is partitioned by key, with Kafka's
// murmur2, so it lands co-partitioned with its changes.
type pendingPartitioner struct {
	pending string
	byKey   kgo.Partitioner
}

func (pp pendingPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == pp.pending {
		return setPartition{}
	}
	return pp.byKey.ForTopic(topic)
}

// setPartition keeps the partition set on the record.
type setPartition struct{}

func (setPartition) RequiresConsistency(*kgo.Record) bool { return true }
func (setPartition) Partition(r *kgo.Record, n int) int   { return int(r.Partition) % n }

// transactionTimeout bounds a transaction; the broker aborts one left open
// by a member that died after this long, and restores wait for that.
const transactionTimeout = 10 * time.Second

// New validates cfg and builds the group member (it joins in Run).
func New(cfg Config) (*Processor, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("processor: no brokers")
	case cfg.Serde == nil:
		return nil, errors.New("processor: no serde")
	case cfg.Group == "":
		return nil, errors.New("processor: no group")
	case cfg.QuietPeriod <= 0 || cfg.MaxDelay < cfg.QuietPeriod:
		return nil, fmt.Errorf("processor: quiet period %s and max delay %s: want 0 < quiet <= max", cfg.QuietPeriod, cfg.MaxDelay)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RestoreIdle == 0 {
		cfg.RestoreIdle = 30 * time.Second
	}
	if cfg.MaxPendingKeys == 0 {
		cfg.MaxPendingKeys = 1_000_000
	}
	if cfg.MaxJSONDepth == 0 {
		cfg.MaxJSONDepth = jsondepth.Default
	}
	p := &Processor{
		cfg:     cfg,
		log:     cfg.Log.With("component", "processor"),
		pending: cfg.Topics.Pending(cfg.Group),
		eos:     cfg.ExactlyOnce,
		now:     time.Now,
		parts:   map[int32]*partition{},
		co:      newCoalescer(cfg.QuietPeriod, cfg.MaxDelay),
		dirty:   map[string]int32{},

		stateTopics: cfg.Topics.Resources(),
	}
	p.stateTopics[""] = cfg.Topics.Products
	compression, err := topics.Compression(cfg.Compression)
	if err != nil {
		return nil, err
	}
	opts := append(topics.ClientOptions(cfg.Brokers, cfg.Log),
		compression,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics.Changes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.lost),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(pendingPartitioner{pending: cfg.Topics.Pending(cfg.Group), byKey: kgo.StickyKeyPartitioner(nil)}),
		kgo.ProducerLinger(5*time.Millisecond),
		// A produce right after EndTxn can meet CONCURRENT_TRANSACTIONS
		// while the broker writes the markers; franz-go retries after a
		// metadata refresh, which the default minimum age (5 s) would
		// hold back, stalling the loop for seconds.
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	if !cfg.ExactlyOnce {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("processor client: %w", err)
		}
		p.client = cl
		return p, nil
	}
	// Every process has its own transactional id; fencing of zombies is by
	// the group generation (KIP-447), so the id need not be stable.
	var id [6]byte
	_, _ = rand.Read(id[:])
	opts = append(opts,
		kgo.TransactionalID(cfg.Group+"-"+hex.EncodeToString(id[:])),
		kgo.TransactionTimeout(transactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
	)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, fmt.Errorf("processor transactional session: %w", err)
	}
	p.sess, p.client = sess, sess.Client()
	return p, nil
}

// Run processes until ctx ends. It returns nil after a clean shutdown, or
// the error that stopped it (the process should exit; a restart resumes
// from what was committed).
func (p *Processor) Run(ctx context.Context) error {
	if p.sess != nil {
		if err := topics.EnsurePending(ctx, kadm.NewClient(p.client), p.cfg.Topics, p.cfg.Group, p.cfg.TopicSpec); err != nil {
			p.sess.Close()
			return err
		}
		return p.runTransactional(ctx)
	}
	return p.runAtLeastOnce(ctx)
}

// poll waits for records until the next deadline (at most 250 ms) and logs
// fetch errors. It reports false when the client is closed.
func (p *Processor) poll(ctx context.Context, pollRecords func(context.Context, int) kgo.Fetches) (kgo.Fetches, bool) {
	wait := 250 * time.Millisecond
	if next, ok := p.nextDeadline(); ok {
		wait = min(max(time.Until(next), time.Millisecond), wait)
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	fetches := pollRecords(pctx, 10000)
	cancel()
	if fetches.IsClientClosed() {
		return nil, false
	}
	fetches.EachError(func(t string, part int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			p.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
		}
	})
	return fetches, true
}

// nextDeadline returns the coalescer's next deadline, or a close one while
// writes are in flight, so that their keys soon count as written.
func (p *Processor) nextDeadline() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next, ok := p.co.next()
	if len(p.inflight) > 0 {
		if soon := time.Now().Add(inflightPoll); !ok || soon.Before(next) {
			return soon, true
		}
	}
	return next, ok
}

// inflightPoll is the longest poll while writes are in flight.
const inflightPoll = 10 * time.Millisecond

// decoded is one record of the changes topic with its decoded change. A
// record with err goes to the dead letter topic.
type decoded struct {
	rec *kgo.Record
	ch  schemas.Change
	err error
}

// ErrRawTooDeep is the dlq-error of a change whose raw JSON nests deeper
// than Config.MaxJSONDepth: merged into state, it would reach consumers
// and sinks whose parsers refuse it.
var ErrRawTooDeep = errors.New("raw JSON nests too deep")

// decodeChange decodes a record's value into d.ch, and refuses a change
// whose raw nests too deep. It needs no processor state, so decoding
// goroutines may call it concurrently.
func (p *Processor) decodeChange(d *decoded) {
	d.ch, d.err = p.cfg.Serde.DecodeChange(context.Background(), d.rec.Value)
	if d.err == nil && jsondepth.Exceeds(d.ch.Raw, p.cfg.MaxJSONDepth) {
		d.err = fmt.Errorf("%w: more than %d levels", ErrRawTooDeep, p.cfg.MaxJSONDepth)
	}
}

// consumeFetches decodes the records of a poll and applies them in order,
// and returns how many there were. Decoding is the largest cost of a change
// and needs no processor state, so it runs on every CPU, a chunk at a time in
// log order, while this goroutine applies each chunk as soon as it is
// decoded: applying one chunk overlaps decoding the next. Called with mu
// held.
func (p *Processor) consumeFetches(fetches kgo.Fetches) int {
	batch := make([]decoded, 0, fetches.NumRecords())
	fetches.EachRecord(func(r *kgo.Record) { batch = append(batch, decoded{rec: r}) })
	n := len(batch)
	decode := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p.decodeChange(&batch[i])
		}
	}
	chunks := (n + decodeChunk - 1) / decodeChunk
	if chunks < 2 {
		decode(0, n)
		p.consumeAll(batch)
		return n
	}
	done := make([]chan struct{}, chunks)
	for c := range done {
		done[c] = make(chan struct{})
	}
	var next atomic.Int64
	for range min(runtime.GOMAXPROCS(0), chunks) {
		go func() {
			for c := int(next.Add(1) - 1); c < chunks; c = int(next.Add(1) - 1) {
				decode(c*decodeChunk, min((c+1)*decodeChunk, n))
				close(done[c])
			}
		}()
	}
	for c := range chunks {
		<-done[c]
		p.consumeAll(batch[c*decodeChunk : min((c+1)*decodeChunk, n)])
	}
	return n
}

// decodeChunk is how many records a decoding goroutine takes at a time.
const decodeChunk = 256

// parallel calls fn on contiguous chunks of [0, n), concurrently when n is
// large enough to pay for the goroutines, and returns when all are done.
func parallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/256)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// consumeAll applies a poll's decoded records in order. Called with mu held.
func (p *Processor) consumeAll(batch []decoded) {
	for i := range batch {
		p.consume(&batch[i])
	}
}

// consume applies one decoded record of the changes topic. Called with mu
// held.
func (p *Processor) consume(d *decoded) {
	r := d.rec
	pt := p.parts[r.Partition]
	if pt == nil {
		return // not (or no longer) ours
	}
	pt.next = r.Offset + 1
	if d.err != nil {
		p.deadLetter(r, d.err)
		return
	}
	ch := &d.ch
	resource := ch.Resource
	if resource == "" {
		resource = "product"
	}
	tag, ok := resourceTags[resource]
	if !ok {
		changesNoState.Inc()
		return // a resource without a state topic stays on changes only
	}
	key := internalKey(tag, r.Key)
	e := pt.states[key]
	if e != nil && r.Offset <= e.version {
		changesReplayed.Inc()
		return // applied before a restart
	}
	p.load(e)
	if stale(e, ch) {
		changesStale.Inc()
		return // older than what the state already reflects
	}
	changesApplied.Inc()
	e = apply(e, ch, r.Offset, p.derive)
	pt.states[key] = e
	if np := p.co.add(key, r.Partition, r.Offset, ch.ReceivedAt, p.now(), e.deleted); np != nil {
		pt.queue = append(pt.queue, np)
	}
	if p.eos {
		p.dirty[key] = r.Partition
	}
}

// load decodes a restored entry's state record on first use. A record that
// does not decode is logged and the key starts afresh, keeping its version
// so that replayed changes are still skipped. Called with mu held.
func (p *Processor) load(e *entry) {
	if e == nil || e.enc == nil {
		return
	}
	st, err := p.cfg.Serde.DecodeState(context.Background(), e.enc)
	e.enc = nil
	if err != nil {
		p.log.Error("undecodable state record: starting the key afresh", "version", e.version, "err", err)
		e.state, e.deleted = schemas.State{Version: e.version}, true
		return
	}
	e.state = st
}

// derive queues a change that another change implies (collection
// membership) for the changes topic, where it is processed like any other
// and its key's partition owns it. Called with mu held.
func (p *Processor) derive(ch schemas.Change) {
	v, err := p.cfg.Serde.EncodeChange(&ch)
	if err != nil {
		p.log.Error("cannot encode a derived change", "event_type", ch.EventType, "err", err)
		return
	}
	metrics.derived.Inc()
	p.derived = append(p.derived, &kgo.Record{Topic: p.cfg.Topics.Changes, Key: []byte(ch.Key()), Value: v,
		Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte(ch.EventID)}, {Key: "source", Value: []byte(ch.Source)}}})
}

// written accounts for a cycle's records once Kafka has them. Called with
// mu held.
func (p *Processor) written(records []*kgo.Record) {
	for _, r := range records {
		switch {
		case r.Topic == p.cfg.Topics.Updates:
			emittedUpdates.Inc()
		case r.Topic == p.cfg.Topics.DLQ:
			metrics.deadLetters.Inc()
		case r.Topic == p.cfg.Topics.Changes || r.Topic == p.pending:
		case r.Value == nil:
			emittedTombstones.Inc()
		default:
			emittedStates.Inc()
		}
	}
	metrics.pendingKeys.Set(float64(p.co.len()))
}

// deadLetter queues a record that cannot be processed for the DLQ topic,
// with headers naming the error and its origin; processing goes on.
func (p *Processor) deadLetter(r *kgo.Record, err error) {
	p.log.Error("record sent to the dead letter topic", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	headers := append([]kgo.RecordHeader{
		{Key: "dlq-error", Value: []byte(err.Error())},
		{Key: "dlq-origin-topic", Value: []byte(r.Topic)},
		{Key: "dlq-origin-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: "dlq-origin-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
	}, r.Headers...)
	p.dlq = append(p.dlq, &kgo.Record{Topic: p.cfg.Topics.DLQ, Key: r.Key, Value: r.Value, Headers: headers})
}

// due returns the keys to emit now: those past their deadline, and the
// earliest ones beyond MaxPendingKeys. Called with mu held.
func (p *Processor) due() []*pending {
	due := p.co.popDue(p.now())
	if over := p.co.len() - p.cfg.MaxPendingKeys; over > 0 {
		due = append(due, p.co.popEarliest(over)...)
		p.forced += int64(over)
		metrics.forced.Add(float64(over))
		p.log.Warn("too many pending keys: flushing early", "keys", over, "max_pending_keys", p.cfg.MaxPendingKeys, "total_forced", p.forced)
	}
	return due
}

// outputs builds the state record (and, for a product, the update record)
// of each due key, then the queued derived changes and dead letters.
// Encoding is spread over the CPUs. Called with mu held.
func (p *Processor) outputs(due []*pending) ([]*kgo.Record, error) {
	now := p.now().UTC()
	perKey := make([][2]*kgo.Record, len(due))
	errs := make([]error, len(due))
	parallel(len(due), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			perKey[i], errs[i] = p.output(due[i], now)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	records := make([]*kgo.Record, 0, 2*len(due)+len(p.derived)+len(p.dlq))
	for _, kr := range perKey {
		for _, r := range kr {
			if r != nil {
				records = append(records, r)
			}
		}
	}
	records = append(records, p.derived...)
	return append(records, p.dlq...), nil
}

// output builds the records of one due key: its state (a tombstone after a
// delete) and, for a product, its update. Keys are distinct, so outputs
// may call it concurrently.
func (p *Processor) output(d *pending, now time.Time) ([2]*kgo.Record, error) {
	var out [2]*kgo.Record
	pt := p.parts[d.partition]
	if pt == nil {
		return out, nil
	}
	e := pt.states[d.key]
	e.render()
	key := []byte(recordKey(d.key))
	headers := []kgo.RecordHeader{{Key: versionHeader, Value: []byte(strconv.FormatInt(e.version, 10))}}
	if e.deleted && e.deletedAt != 0 {
		headers = append(headers, kgo.RecordHeader{Key: deletedAtHeader, Value: []byte(strconv.FormatInt(e.deletedAt, 10))})
	}
	stateRec := &kgo.Record{Topic: p.stateTopics[e.state.Resource], Key: key, Headers: headers}
	out[0] = stateRec
	var st *schemas.State
	if !e.deleted {
		st = &e.state
	}
	if !e.state.IsProduct() {
		if st != nil {
			v, err := p.cfg.Serde.EncodeState(st)
			if err != nil {
				return out, fmt.Errorf("encode state of %s: %w", key, err)
			}
			stateRec.Value = v
		}
		return out, nil
	}
	up := schemas.Update{
		Namespace: e.state.Namespace, ProductID: e.state.ProductID, Deleted: e.deleted,
		ChangeCount: int32(d.count), Version: e.version,
		FirstReceivedAt: d.firstRecv, LastReceivedAt: d.lastRecv, EmittedAt: now, State: st,
	}
	sv, uv, err := p.cfg.Serde.EncodeStateAndUpdate(st, &up)
	if err != nil {
		return out, fmt.Errorf("encode state and update of %s: %w", key, err)
	}
	stateRec.Value = sv
	out[1] = &kgo.Record{Topic: p.cfg.Topics.Updates, Key: key, Value: uv}
	return out, nil
}

// assigned restores the state of newly assigned partitions (and, in
// exactly-once mode, their pending buffer) before any of their changes is
// processed.
func (p *Processor) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	parts := assigned[p.cfg.Topics.Changes]
	if len(parts) == 0 {
		return
	}
	start := time.Now()
	p.log.Info("restoring partitions", "partitions", parts)
	r, err := p.restore(ctx, parts)
	if err != nil {
		// Without its state a partition cannot be processed correctly:
		// stop the member so that the group moves the partitions on.
		p.log.Error("restore failed; leaving the group", "partitions", parts, "err", err)
		go cl.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.install(parts, r)
	metrics.assignedPartitns.Set(float64(len(p.parts)))
	took := time.Since(start)
	p.log.Info("partitions assigned", "partitions", parts, "restored_records", r.records, "pending_keys", len(r.pending),
		"took", took.Round(time.Millisecond), "records_per_s", int(float64(r.records)/max(took.Seconds(), 1e-3)))
}

// install puts restored partitions in place. Called with mu held.
func (p *Processor) install(parts []int32, r *restored) {
	for _, part := range parts {
		p.parts[part] = &partition{states: r.states[part], next: -1, committed: -1}
	}
	for _, pe := range r.pending {
		p.co.restore(pe)
		if pt := p.parts[pe.partition]; pt != nil {
			pt.queue = append(pt.queue, pe)
		}
	}
}

// revoked gives up partitions. At least once, it writes what is buffered
// for them and commits it; exactly once, the pending buffer is already in
// its changelog as of the last transaction, so it is just dropped.
func (p *Processor) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.rebalancing.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.rebalancing.Store(false)
	parts := revoked[p.cfg.Topics.Changes]
	if !p.eos {
		for _, part := range parts {
			if err := p.flush(context.WithoutCancel(ctx), p.co.popPartition(part)); err != nil {
				// Left uncommitted: the next owner re-reads these changes.
				p.log.Error("flush on revoke failed", "partition", part, "err", err)
			}
		}
		if err := p.commit(context.WithoutCancel(ctx)); err != nil {
			p.log.Warn("commit on revoke failed", "err", err)
		}
	}
	p.drop(parts)
	metrics.assignedPartitns.Set(float64(len(p.parts)))
	p.log.Info("partitions revoked", "partitions", parts)
}

// lost forgets partitions without committing: another member owns them.
func (p *Processor) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.rebalancing.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.rebalancing.Store(false)
	p.drop(lost[p.cfg.Topics.Changes])
	p.log.Warn("partitions lost", "partitions", lost[p.cfg.Topics.Changes])
}

// drop forgets partitions and everything buffered for them. Called with mu held.
func (p *Processor) drop(parts []int32) {
	for _, part := range parts {
		p.co.popPartition(part)
		delete(p.parts, part)
		for k, kp := range p.dirty {
			if kp == part {
				delete(p.dirty, k)
			}
		}
	}
}
