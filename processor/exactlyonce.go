package processor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/topics"
)

// exactlyOnce is the transactional delivery mode: each cycle's outputs,
// pending-buffer changes and consumed offsets commit together.
type exactlyOnce struct {
	p     *Processor
	sess  *kgo.GroupTransactSession // not for rebalance callbacks, which may run before it is set
	dirty map[string]int32          // keys whose pending entry changed this cycle, with their partition
}

func newExactlyOnce(p *Processor) *exactlyOnce {
	return &exactlyOnce{p: p, dirty: map[string]int32{}}
}

// transactionTimeout bounds a transaction; the broker aborts one left open
// by a member that died after this long, and restores wait for that.
const transactionTimeout = 10 * time.Second

// cycleTimeout bounds a cycle's transaction, from its first record to its
// end. By then the broker aborts it anyway: a cycle that takes this long
// meets Kafka not answering, and Run recovers.
const cycleTimeout = transactionTimeout

func (m *exactlyOnce) newClient(opts []kgo.Opt) (*kgo.Client, error) {
	// Every process has its own transactional id; fencing of zombies is by
	// the group generation (KIP-447), so the id need not be stable. A
	// static member's is its instance id: restarted, it aborts at once
	// the transaction it left open, which a restore would otherwise wait
	// for the broker to time out.
	var id [6]byte
	_, _ = rand.Read(id[:])
	suffix := hex.EncodeToString(id[:])
	if m.p.cfg.InstanceID != "" {
		suffix = "static-" + m.p.cfg.InstanceID
	}
	sess, err := kgo.NewGroupTransactSession(append(opts,
		kgo.TransactionalID(m.p.cfg.Group+"-"+suffix),
		kgo.TransactionTimeout(transactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
	)...)
	if err != nil {
		return nil, fmt.Errorf("processor transactional session: %w", err)
	}
	m.sess = sess
	return sess.Client(), nil
}

// start creates the pending changelog if it is missing, retrying while
// Kafka does not answer, and has the client get its producer id meanwhile.
func (m *exactlyOnce) start(ctx context.Context) error {
	p := m.p
	m.initProducerID(ctx)
	for tries := 1; ; tries++ {
		err := topics.EnsurePending(ctx, kadm.NewClient(p.client), p.cfg.Topics, p.cfg.Group, p.cfg.TopicSpec)
		if err == nil {
			p.kafka.ok()
			return nil
		}
		if permanent(err) || errors.Is(err, topics.ErrPartitionMismatch) || !sleep(ctx, retryBackoff(tries)) {
			m.sess.Close()
			return err
		}
		p.kafka.fail(fmt.Errorf("create the pending changelog: %w", err))
	}
}

// initProducerID has the client find its transaction coordinator and get
// its producer id in the background, while the member joins the group and
// restores, instead of in its first transaction: on a broker whose
// coordinator for the id is not loaded yet, that took the first cycle
// several hundred milliseconds. A failure is left to the first
// transaction, which reports it.
func (m *exactlyOnce) initProducerID(ctx context.Context) {
	cl := m.p.client
	go func() {
		if _, _, err := cl.ProducerID(ctx); err != nil && ctx.Err() == nil {
			m.p.log.Debug("producer id not loaded ahead of the first transaction", "err", err)
		}
	}()
}

func (m *exactlyOnce) close() { m.sess.CloseAllowingRebalance() }

// renew closes the session (its member leaves the group, or a static one
// is replaced by the new one) and starts a new one on the same options.
func (m *exactlyOnce) renew() error {
	m.sess.CloseAllowingRebalance()
	cl, err := m.newClient(m.p.memberOpts)
	if err != nil {
		return err
	}
	m.p.client = cl
	m.initProducerID(context.Background())
	return nil
}

// changed marks key's pending entry for the changelog of this cycle.
func (m *exactlyOnce) changed(key string, partition int32) { m.dirty[key] = partition }

// write commits a cycle that has anything to commit: consumed offsets,
// due keys, dead letters or derived changes.
func (m *exactlyOnce) write(ctx context.Context, consumed int, due []*pending) error {
	if consumed == 0 && len(due) == 0 && len(m.p.dlq) == 0 && len(m.p.derived) == 0 {
		return nil
	}
	return m.transact(ctx, due)
}

// inFlight is 0: a cycle's transaction has ended when write returns.
func (m *exactlyOnce) inFlight() int { return 0 }

// revoke does nothing: the pending buffer is already in its changelog as of
// the last transaction, so the partitions' keys are just dropped.
func (m *exactlyOnce) revoke(context.Context, []int32) {}

// drop forgets the changed pending entries of the partitions.
func (m *exactlyOnce) drop(parts []int32) {
	for k, kp := range m.dirty {
		if slices.Contains(parts, kp) {
			delete(m.dirty, k)
		}
	}
}

// abort aborts the transaction a failed cycle left open, if any (franz-go
// aborts one whose end is unconfirmed by bumping the producer epoch), and
// rewinds the client to the committed offsets: nothing to send back
// itself.
func (m *exactlyOnce) abort(ctx context.Context) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := m.sess.End(actx, kgo.TryAbort)
	return err
}

// aborted forgets the changed pending entries: the client consumes from
// the committed offsets again.
func (m *exactlyOnce) aborted() map[int32]int64 {
	clear(m.dirty)
	return nil
}

// abortTimeout bounds one attempt to abort.
const abortTimeout = 10 * time.Second

// unpoll rewinds the client to the committed offsets, which is where the
// poll began: every cycle that consumed committed what it consumed. No
// transaction is open, so this needs no broker.
func (m *exactlyOnce) unpoll(ctx context.Context, _ kgo.Fetches) error {
	return m.abort(ctx)
}

// settle has nothing to wait for: a restore waits for open transactions to
// end.
func (m *exactlyOnce) settle(context.Context, *kgo.Client) error { return nil }

// drainsOnStop is false: what was polled and not committed is read again
// by the next owner; the pending buffer is in its changelog.
func (m *exactlyOnce) drainsOnStop() bool { return false }

// shutdown has nothing to do, for the same reason.
func (m *exactlyOnce) shutdown() error { return nil }

// transact writes one cycle in a transaction: states and updates of the due
// keys, their pending entries removed, the changed pending entries, the dead
// letters, and the consumed offsets. A transaction the broker or a
// rebalance aborted is followed by a restore of what was committed; an
// error leaves the transaction to the mode's abort (Run's recover). Called
// with mu held.
func (m *exactlyOnce) transact(parent context.Context, due []*pending) error {
	p := m.p
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), cycleTimeout)
	defer cancel()
	if err := m.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	p.nextCycle = time.Now().Add(p.cfg.CommitInterval)
	records, err := p.outputs(due)
	if err == nil {
		for _, d := range due {
			records = append(records, &kgo.Record{Topic: p.pending, Key: []byte(d.key), Partition: d.partition})
			delete(m.dirty, d.key)
		}
		records, err = m.pendingRecords(records)
	}
	var (
		mu         sync.Mutex
		produceErr error
	)
	if err == nil {
		for _, r := range records {
			m.sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
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
		committed, endErr = m.endWithoutOffsets(ctx, try)
	} else {
		committed, endErr = m.sess.End(ctx, try)
	}
	if endErr != nil {
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if !committed {
		p.metrics.transactions.WithLabelValues("aborted").Inc()
		p.log.Warn("transaction aborted; restoring from what was committed", "err", err)
		clear(m.dirty)
		p.forget(nil) // Run restores them before it polls again
		return nil
	}
	p.metrics.transactions.WithLabelValues("committed").Inc()
	p.answered()
	for _, d := range due {
		d.flushed = true
	}
	clear(m.dirty)
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
func (m *exactlyOnce) endWithoutOffsets(ctx context.Context, try kgo.TransactionEndTry) (bool, error) {
	cl := m.p.client
	if try == kgo.TryCommit {
		if err := cl.Flush(ctx); err != nil {
			return false, err
		}
	} else if err := cl.AbortBufferedRecords(ctx); err != nil {
		return false, err
	}
	commit := try == kgo.TryCommit && !m.p.rebalancing.Load()
	for tries := 1; ; tries++ {
		err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit))
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
func (m *exactlyOnce) pendingRecords(records []*kgo.Record) ([]*kgo.Record, error) {
	p := m.p
	keys := make([]string, 0, len(m.dirty))
	for key, part := range m.dirty {
		if p.co.byKey[key] != nil && p.parts[part] != nil {
			keys = append(keys, key)
		}
	}
	out := make([]*kgo.Record, len(keys))
	errs := make([]error, len(keys))
	parallel(len(keys), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			key := keys[i]
			v, err := encodePending(p.parts[m.dirty[key]].states[key], p.co.byKey[key], p.cfg.PendingJSON)
			out[i], errs[i] = &kgo.Record{Topic: p.pending, Key: []byte(key), Value: v, Partition: m.dirty[key]}, err
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w pending entries: %w", errEncode, err)
	}
	return append(records, out...), nil
}
