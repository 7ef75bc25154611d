package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runTransactional is the loop of the exactly-once mode: each cycle's
// outputs, pending-buffer changes and consumed offsets commit together.
func (p *Processor) runTransactional(ctx context.Context) error {
	defer p.sess.CloseAllowingRebalance()
	for {
		fetches, ok := p.poll(ctx, p.sess.PollRecords)
		if !ok {
			return nil
		}
		if ctx.Err() != nil {
			// What was polled and not committed is read again by the next
			// owner; the pending buffer is in its changelog.
			return nil
		}
		t0 := time.Now()
		p.mu.Lock()
		records := p.consumeFetches(fetches)
		due := p.due()
		t1 := time.Now()
		var err error
		if records > 0 || len(due) > 0 || len(p.dlq) > 0 || len(p.derived) > 0 {
			err = p.transact(ctx, due)
		}
		p.mu.Unlock()
		p.log.Debug("cycle", "records", records, "due", len(due), "consume", t1.Sub(t0), "transact", time.Since(t1))
		p.sess.AllowRebalance()
		if err != nil {
			return err
		}
	}
}

// transact writes one cycle in a transaction: states and updates of the due
// keys, their pending entries removed, the changed pending entries, the dead
// letters, and the consumed offsets. Called with mu held.
func (p *Processor) transact(parent context.Context, due []*pending) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), time.Minute)
	defer cancel()
	if err := p.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	records, err := p.outputs(due)
	if err == nil {
		for _, d := range due {
			records = append(records, &kgo.Record{Topic: p.pending, Key: []byte(d.key), Partition: d.partition})
			delete(p.dirty, d.key)
		}
		records, err = p.pendingRecords(records)
	}
	var (
		mu         sync.Mutex
		produceErr error
	)
	if err == nil {
		for _, r := range records {
			p.sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					produceErr = err
					mu.Unlock()
				}
			})
		}
		if err = p.client.Flush(ctx); err == nil {
			err = produceErr
		}
	}
	try := kgo.TryCommit
	if err != nil {
		try = kgo.TryAbort
	}
	var (
		committed bool
		endErr    error
	)
	if len(p.client.UncommittedOffsets()) == 0 {
		p.log.Debug("ending a transaction without consumer offsets", "records", len(records))
		committed, endErr = p.endWithoutOffsets(ctx, try)
	} else {
		committed, endErr = p.sess.End(ctx, try)
	}
	if endErr != nil {
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if !committed {
		metrics.transactions.WithLabelValues("aborted").Inc()
		p.log.Warn("transaction aborted; restoring from what was committed", "err", err)
		return p.reset(ctx)
	}
	metrics.transactions.WithLabelValues("committed").Inc()
	for _, d := range due {
		d.flushed = true
	}
	clear(p.dirty)
	p.derived, p.dlq = nil, nil
	p.written(records)
	return nil
}

// endWithoutOffsets ends a transaction that carries no consumer offsets (a
// cycle that polled nothing and only writes keys that came due), as
// GroupTransactSession.End would: flush, commit unless the group revoked or
// lost partitions meanwhile, and retry an unconfirmed commit as an abort.
//
// End itself would pause 500 ms after such a transaction: it learns that the
// broker supports KIP-447 only from a TxnOffsetCommit answer, which this
// transaction has none of, and then waits as for an old broker before it
// lets a rebalance go on. Every flush of an idle processor would stall the
// next cycle that long. With no offsets in the transaction there is nothing
// for that wait to protect (End skips the group heartbeat for the same
// reason).
func (p *Processor) endWithoutOffsets(ctx context.Context, try kgo.TransactionEndTry) (bool, error) {
	if try == kgo.TryCommit {
		if err := p.client.Flush(ctx); err != nil {
			return false, err
		}
	} else if err := p.client.AbortBufferedRecords(ctx); err != nil {
		return false, err
	}
	commit := try == kgo.TryCommit && !p.rebalancing.Load()
	for tries := 1; ; tries++ {
		err := p.client.EndTransaction(ctx, kgo.TransactionEndTry(commit))
		if err != nil && commit && tries < 10 &&
			(errors.Is(err, kerr.OperationNotAttempted) || errors.Is(err, kerr.TransactionAbortable) || errors.Is(err, kerr.UnknownServerError)) {
			commit = false // the outcome is unknown or refused: abort, and restore from what was committed
			continue
		}
		if err != nil {
			return false, err
		}
		return commit, nil
	}
}

// pendingRecords appends the changelog records of the keys whose pending
// entry changed this cycle, encoded in parallel. Called with mu held.
func (p *Processor) pendingRecords(records []*kgo.Record) ([]*kgo.Record, error) {
	keys := make([]string, 0, len(p.dirty))
	for key, part := range p.dirty {
		if p.co.byKey[key] != nil && p.parts[part] != nil {
			keys = append(keys, key)
		}
	}
	out := make([]*kgo.Record, len(keys))
	errs := make([]error, len(keys))
	parallel(len(keys), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			key := keys[i]
			v, err := encodePending(p.parts[p.dirty[key]].states[key], p.co.byKey[key])
			out[i], errs[i] = &kgo.Record{Topic: p.pending, Key: []byte(key), Value: v, Partition: p.dirty[key]}, err
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("encode pending entries: %w", err)
	}
	return append(records, out...), nil
}

// reset throws away everything not committed and restores the owned
// partitions from their state topics; the session has rewound consumption
// to the committed offsets. Called with mu held.
func (p *Processor) reset(ctx context.Context) error {
	parts := make([]int32, 0, len(p.parts))
	for part := range p.parts {
		parts = append(parts, part)
	}
	p.drop(parts)
	p.dlq, p.derived = nil, nil
	r, err := p.restore(ctx, parts)
	if err != nil {
		return fmt.Errorf("restore after an aborted transaction: %w", err)
	}
	p.install(parts, r)
	return nil
}
