// Package processor consumes the changes topic in a consumer group, merges
// each change into its product's state, coalesces bursts on the wall clock
// (a quiet period, capped by a max delay), and writes the compacted products
// topic and the collapsed updates topic.
//
// Guarantees: offsets are committed only up to the first change whose
// product has not been written yet, so a crash never loses a change; every
// state carries the offset of the last change applied (its version), and a
// change at or below a key's restored version is skipped, so replaying after
// a crash does not apply a change twice to the state. Updates are written at
// least once: a crash between writing and committing can repeat one.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Config configures a Processor. Every field is required but Log.
type Config struct {
	Brokers     []string
	Topics      topics.Names
	Group       string
	QuietPeriod time.Duration
	MaxDelay    time.Duration
	Serde       *schemas.Serde
	Log         *slog.Logger
	// RestoreIdle ends a partition's restore when the products topic has
	// sent nothing for this long before its end offset was reached (records
	// at the end removed by compaction). Default 2s.
	RestoreIdle time.Duration
}

// Processor is one member of the processor consumer group. Build it with
// New, run it with Run.
type Processor struct {
	cfg    Config
	log    *slog.Logger
	client *kgo.Client
	now    func() time.Time

	mu    sync.Mutex // held by the loop while it processes, and by rebalance callbacks
	parts map[int32]*partition
	co    *coalescer
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

// New validates cfg and joins the group (the join completes in Run).
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
		cfg.RestoreIdle = 2 * time.Second
	}
	p := &Processor{
		cfg:   cfg,
		log:   cfg.Log.With("component", "processor"),
		now:   time.Now,
		parts: map[int32]*partition{},
		co:    newCoalescer(cfg.QuietPeriod, cfg.MaxDelay),
	}
	opts := append(topics.ClientOptions(cfg.Brokers, cfg.Log),
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
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("processor client: %w", err)
	}
	p.client = cl
	return p, nil
}

// Run processes until ctx ends, then writes what is buffered, commits and
// leaves the group. It returns nil after a clean shutdown, or the error
// that stopped it (the process should exit; a restart resumes from the
// committed offsets).
func (p *Processor) Run(ctx context.Context) error {
	defer p.client.Close()
	for {
		wait := 250 * time.Millisecond
		if next, ok := p.nextDeadline(); ok {
			wait = min(max(time.Until(next), time.Millisecond), wait)
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		fetches := p.client.PollRecords(pctx, 10000)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
			}
		})
		p.mu.Lock()
		fetches.EachRecord(p.consume)
		err := p.flush(context.WithoutCancel(ctx), p.co.popDue(p.now()))
		if err == nil {
			err = p.commit(context.WithoutCancel(ctx))
		}
		p.mu.Unlock()
		p.client.AllowRebalance()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return p.shutdown()
		}
	}
}

// nextDeadline returns the coalescer's next deadline.
func (p *Processor) nextDeadline() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.co.next()
}

// shutdown writes everything buffered and commits it; Close then leaves
// the group.
func (p *Processor) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.flush(ctx, p.co.popDue(time.Unix(1<<40, 0))); err != nil {
		return fmt.Errorf("flush on shutdown: %w", err)
	}
	return p.commit(ctx)
}

// consume applies one record of the changes topic. Called with mu held.
func (p *Processor) consume(r *kgo.Record) {
	pt := p.parts[r.Partition]
	if pt == nil {
		return // not (or no longer) ours
	}
	pt.next = r.Offset + 1
	key := string(r.Key)
	e := pt.states[key]
	if e != nil && r.Offset <= e.state.Version {
		return // applied before a restart
	}
	ch, err := p.cfg.Serde.DecodeChange(context.Background(), r.Value)
	if err != nil {
		p.log.Error("skipping undecodable change", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	if ch.Resource != "" && ch.Resource != "product" {
		// Collections, categories, options and groups get state topics of
		// their own; until then they stay on the changes topic only.
		return
	}
	pt.states[key] = apply(e, &ch, r.Offset)
	if np := p.co.add(key, r.Partition, r.Offset, ch.ReceivedAt, p.now(), ch.Deleted); np != nil {
		pt.queue = append(pt.queue, np)
	}
}

// flush writes the state and an update of each due key and waits for Kafka
// to acknowledge them all. Called with mu held.
func (p *Processor) flush(ctx context.Context, due []*pending) error {
	if len(due) == 0 {
		return nil
	}
	now := p.now().UTC()
	records := make([]*kgo.Record, 0, 2*len(due))
	for _, d := range due {
		pt := p.parts[d.partition]
		if pt == nil {
			continue
		}
		e := pt.states[d.key]
		up := schemas.Update{
			Namespace: e.state.Namespace, ProductID: e.state.ProductID, Deleted: e.deleted,
			ChangeCount: int32(d.count), Version: e.state.Version,
			FirstReceivedAt: d.firstRecv, LastReceivedAt: d.lastRecv, EmittedAt: now,
		}
		stateRec := &kgo.Record{Topic: p.cfg.Topics.Products, Key: []byte(d.key)}
		if !e.deleted {
			st := e.state
			up.State = &st
			v, err := p.cfg.Serde.EncodeState(&st)
			if err != nil {
				return fmt.Errorf("encode state of %s: %w", d.key, err)
			}
			stateRec.Value = v
		}
		uv, err := p.cfg.Serde.EncodeUpdate(&up)
		if err != nil {
			return fmt.Errorf("encode update of %s: %w", d.key, err)
		}
		records = append(records, stateRec, &kgo.Record{Topic: p.cfg.Topics.Updates, Key: []byte(d.key), Value: uv})
	}
	if err := p.client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("write %d state and update records: %w", len(records), err)
	}
	for _, d := range due {
		d.flushed = true
	}
	p.log.Debug("flushed", "keys", len(due), "pending", p.co.len())
	return nil
}

// commit commits each assigned partition's watermark where it moved.
// Called with mu held.
func (p *Processor) commit(ctx context.Context) error {
	offsets := map[int32]kgo.EpochOffset{}
	for part, pt := range p.parts {
		if w := pt.watermark(); w > pt.committed {
			offsets[part] = kgo.EpochOffset{Epoch: -1, Offset: w}
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	var commitErr error
	p.client.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{p.cfg.Topics.Changes: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				commitErr = err
				return
			}
			for _, t := range resp.Topics {
				for _, part := range t.Partitions {
					if part.ErrorCode != 0 {
						commitErr = fmt.Errorf("partition %d: error code %d", part.Partition, part.ErrorCode)
					}
				}
			}
		})
	if commitErr != nil {
		// Not fatal: the offsets stay uncommitted and are retried next
		// round; at worst a restart re-reads changes the versions skip.
		p.log.Warn("commit failed", "err", commitErr)
		return nil
	}
	for part, o := range offsets {
		if pt := p.parts[part]; pt != nil {
			pt.committed = o.Offset
		}
	}
	return nil
}

// assigned restores the state of newly assigned partitions from the
// products topic before any of their changes is processed.
func (p *Processor) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	parts := assigned[p.cfg.Topics.Changes]
	if len(parts) == 0 {
		return
	}
	start := time.Now()
	states, n, err := p.restore(ctx, parts)
	if err != nil {
		// Without its state a partition cannot be processed correctly:
		// stop the member so that the group moves the partitions on.
		p.log.Error("restore failed; leaving the group", "partitions", parts, "err", err)
		go p.client.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range parts {
		p.parts[part] = &partition{states: states[part], next: -1, committed: -1}
	}
	p.log.Info("partitions assigned", "partitions", parts, "restored_records", n, "took", time.Since(start).Round(time.Millisecond))
}

// revoked writes what is buffered for the revoked partitions and commits
// it, then forgets them.
func (p *Processor) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts := revoked[p.cfg.Topics.Changes]
	for _, part := range parts {
		if err := p.flush(context.WithoutCancel(ctx), p.co.popPartition(part)); err != nil {
			// Left uncommitted: the next owner re-reads these changes.
			p.log.Error("flush on revoke failed", "partition", part, "err", err)
		}
	}
	if err := p.commit(context.WithoutCancel(ctx)); err != nil {
		p.log.Warn("commit on revoke failed", "err", err)
	}
	for _, part := range parts {
		delete(p.parts, part)
	}
	p.log.Info("partitions revoked", "partitions", parts)
}

// lost forgets partitions without committing: another member owns them.
func (p *Processor) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range lost[p.cfg.Topics.Changes] {
		p.co.popPartition(part)
		delete(p.parts, part)
	}
	p.log.Warn("partitions lost", "partitions", lost[p.cfg.Topics.Changes])
}

// restore reads the products topic's partitions from the start to their
// current end and returns the latest state per key (tombstones remove).
func (p *Processor) restore(ctx context.Context, parts []int32) (map[int32]map[string]*entry, int, error) {
	states := make(map[int32]map[string]*entry, len(parts))
	start := map[int32]kgo.Offset{}
	for _, part := range parts {
		states[part] = map[string]*entry{}
		start[part] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(topics.ClientOptions(p.cfg.Brokers, p.cfg.Log),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.Topics.Products: start}))...)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, p.cfg.Topics.Products)
	if err != nil {
		return nil, 0, fmt.Errorf("end offsets of %s: %w", p.cfg.Topics.Products, err)
	}
	remaining := map[int32]int64{}
	for _, part := range parts {
		if o, ok := ends.Lookup(p.cfg.Topics.Products, part); ok && o.Err == nil && o.Offset > 0 {
			remaining[part] = o.Offset
		} else if ok && o.Err != nil {
			return nil, 0, fmt.Errorf("end offset of %s/%d: %w", p.cfg.Topics.Products, part, o.Err)
		}
	}
	n := 0
	for len(remaining) > 0 {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.RestoreIdle)
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if fetches.Empty() {
			p.log.Warn("restore idle before the end offset; assuming compacted tail", "partitions", remaining)
			break
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok {
				return
			}
			if r.Value == nil {
				delete(states[r.Partition], string(r.Key))
			} else if st, err := p.cfg.Serde.DecodeState(ctx, r.Value); err != nil {
				p.log.Error("skipping undecodable state", "partition", r.Partition, "offset", r.Offset, "err", err)
			} else {
				states[r.Partition][string(r.Key)] = &entry{state: st}
			}
			n++
			if r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
	return states, n, nil
}
