package processor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// atLeastOnce is the delivery mode for brokers without transactions: send
// what is due, and commit each partition's watermark. Writes are pipelined:
// a cycle's records are produced without waiting, the loop goes on to the
// next poll, and a key counts as written (so the watermark may pass its
// changes) only once Kafka acknowledged every record of its cycle.
type atLeastOnce struct {
	p            *Processor
	inflight     []*sentCycle // cycles sent and not yet reaped, oldest first
	commitFailed atomic.Bool  // an asynchronous commit failed; commit every watermark again
}

func newAtLeastOnce(p *Processor) *atLeastOnce { return &atLeastOnce{p: p} }

func (m *atLeastOnce) newClient(opts []kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("processor client: %w", err)
	}
	return cl, nil
}

func (m *atLeastOnce) start(context.Context) error { return nil }

func (m *atLeastOnce) close() { m.p.client.Close() }

// renew has nothing to do: without transactions, the broker fences no
// producer of ours for good.
func (m *atLeastOnce) renew() error { return nil }

// changed has nothing to note: the watermark follows the partition's queue.
func (m *atLeastOnce) changed(string, int32) {}

// write sends the cycle's records, accounts for the cycles Kafka has
// acknowledged, and commits the watermarks that moved without waiting.
func (m *atLeastOnce) write(ctx context.Context, _ int, due []*pending) error {
	m.send(context.WithoutCancel(ctx), due)
	err := m.reap()
	if err == nil {
		m.commitAsync(ctx)
	}
	return err
}

func (m *atLeastOnce) inFlight() int { return len(m.inflight) }

// revoke writes what is buffered for the partitions, waits for it and
// commits it.
func (m *atLeastOnce) revoke(ctx context.Context, parts []int32) {
	for _, part := range parts {
		if err := m.flush(context.WithoutCancel(ctx), m.p.co.popPartition(part)); err != nil {
			// Left uncommitted: the next owner re-reads these changes.
			m.p.log.Error("flush on revoke failed", "partition", part, "err", err)
		}
	}
	if err := m.commit(context.WithoutCancel(ctx)); err != nil {
		m.p.log.Warn("commit on revoke failed", "err", err)
	}
}

func (m *atLeastOnce) drop([]int32) {}

// abort fails the records not yet acknowledged, once the requests in
// flight are answered.
func (m *atLeastOnce) abort(ctx context.Context) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	return m.p.client.AbortBufferedRecords(actx)
}

// aborted accounts for the cycles acknowledged before the first that
// failed, and forgets the others. Every owned partition is then consumed
// again from its watermark, the first change whose key was not written:
// the keys of the cycles forgotten are written again.
func (m *atLeastOnce) aborted() map[int32]int64 {
	_ = m.reap() // stops at the first failed cycle, which stays unwritten
	m.inflight = nil
	at := map[int32]int64{}
	for part, pt := range m.p.parts {
		if w := pt.watermark(); w >= 0 {
			at[part] = w
		}
	}
	return at
}

// unpoll sends the client back to the first record of each partition in
// fetches.
func (m *atLeastOnce) unpoll(_ context.Context, fetches kgo.Fetches) error {
	at := map[int32]kgo.EpochOffset{}
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) > 0 && ftp.Topic == m.p.cfg.Topics.Changes {
			at[ftp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: ftp.Records[0].Offset}
		}
	})
	m.p.client.SetOffsets(map[string]map[int32]kgo.EpochOffset{m.p.cfg.Topics.Changes: at})
	return nil
}

// settle waits for every record in flight to be acknowledged: after a
// partition was lost, its last writes may land late, and a restore that
// missed them would apply their changes again.
func (m *atLeastOnce) settle(ctx context.Context, cl *kgo.Client) error {
	fctx, cancel := context.WithTimeout(ctx, abortTimeout)
	defer cancel()
	return cl.Flush(fctx)
}

// drainsOnStop is true: the last poll is applied, and shutdown writes it.
func (m *atLeastOnce) drainsOnStop() bool { return true }

// shutdown writes everything buffered, waits for it and commits it; Close
// then leaves the group.
func (m *atLeastOnce) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.flush(ctx, m.p.co.popDue(time.Unix(1<<40, 0))); err != nil {
		return fmt.Errorf("flush on shutdown: %w", err)
	}
	return m.commit(ctx)
}

// A sentCycle is one loop round's records on their way to Kafka. Its
// producer callbacks only touch left, err and done, so they never wait for
// mu.
type sentCycle struct {
	due     []*pending
	records []*kgo.Record
	left    atomic.Int64
	done    chan struct{} // closed once every record is acknowledged or failed
	errOnce sync.Once
	err     error // the first failure; read only after done
}

// send produces the state and update of each due key, and the queued
// derived changes and dead letters, without waiting for Kafka; reap
// accounts for them once acknowledged. An encoding error fails the cycle
// (reap reports it). Called with mu held.
func (m *atLeastOnce) send(ctx context.Context, due []*pending) {
	p := m.p
	if len(due) == 0 && len(p.dlq) == 0 && len(p.derived) == 0 {
		return
	}
	c := &sentCycle{due: due, done: make(chan struct{})}
	m.inflight = append(m.inflight, c)
	records, err := p.outputs(due)
	p.derived, p.dlq = nil, nil
	if err != nil || len(records) == 0 {
		c.err = err
		close(c.done)
		return
	}
	c.records = records
	c.left.Store(int64(len(records)))
	for _, r := range records {
		p.client.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				c.errOnce.Do(func() { c.err = err })
			}
			if c.left.Add(-1) == 0 {
				close(c.done)
			}
		})
	}
}

// reap accounts for the cycles Kafka has acknowledged, oldest first, and
// stops at the first one still in flight: their keys count as written from
// now on. It returns the error of a failed cycle, now and at every later
// call; its keys stay unwritten, so the watermark never passes their
// changes. Called with mu held.
func (m *atLeastOnce) reap() error {
	for len(m.inflight) > 0 {
		c := m.inflight[0]
		select {
		case <-c.done:
		default:
			return nil
		}
		if c.err != nil {
			// Left at the head, so every later reap reports it too.
			return fmt.Errorf("write %d state and update records: %w", len(c.records), c.err)
		}
		m.inflight[0] = nil
		m.inflight = m.inflight[1:]
		for _, d := range c.due {
			d.flushed = true
		}
		m.p.written(c.records)
	}
	return nil
}

// flush sends the due keys and waits until Kafka has acknowledged them and
// every cycle still in flight. Called with mu held.
func (m *atLeastOnce) flush(ctx context.Context, due []*pending) error {
	m.send(ctx, due)
	if err := m.p.client.Flush(ctx); err != nil {
		return fmt.Errorf("wait for the writes in flight: %w", err)
	}
	return m.reap()
}

// moved returns each assigned partition's watermark where it moved past
// what was committed, and takes it as committed. A failed asynchronous
// commit makes every partition count as moved again. Called with mu held.
func (m *atLeastOnce) moved() map[int32]kgo.EpochOffset {
	retry := m.commitFailed.Swap(false)
	offsets := map[int32]kgo.EpochOffset{}
	for part, pt := range m.p.parts {
		if w := pt.watermark(); w > pt.committed || (retry && w >= 0) {
			offsets[part] = kgo.EpochOffset{Epoch: -1, Offset: w}
			pt.committed = w
		}
	}
	return offsets
}

// commitAsync commits the watermarks that moved without waiting; a failure
// is logged and the next round commits again. franz-go keeps commits in
// the order they were issued. During an outage it commits nothing, and a
// commit gives up after commitTimeout: franz-go lets the member rejoin the
// group only once no commit is in flight, and a commit waiting for Kafka
// would hold the rejoin back after the outage. Called with mu held.
func (m *atLeastOnce) commitAsync(ctx context.Context) {
	if m.p.kafka.down() {
		return // committed once Kafka answers
	}
	offsets := m.moved()
	if len(offsets) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	m.p.client.CommitOffsets(cctx, map[string]map[int32]kgo.EpochOffset{m.p.cfg.Topics.Changes: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			cancel()
			if err = commitError(resp, err); err != nil {
				// Not fatal: at worst a restart re-reads changes the
				// versions skip.
				if unreachable(err) {
					m.p.kafka.fail(fmt.Errorf("commit: %w", err))
				} else {
					m.p.log.Warn("commit failed; retrying next round", "err", err)
				}
				m.commitFailed.Store(true)
				return
			}
			m.p.answered()
		})
}

// commitTimeout bounds an asynchronous commit.
const commitTimeout = 5 * time.Second

// commit commits each assigned partition's watermark where it moved, and
// waits for the answer (and for every commit issued before). Called with
// mu held.
func (m *atLeastOnce) commit(ctx context.Context) error {
	offsets := m.moved()
	if len(offsets) == 0 {
		return nil
	}
	var commitErr error
	m.p.client.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{m.p.cfg.Topics.Changes: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			commitErr = commitError(resp, err)
		})
	if commitErr != nil {
		// Not fatal: the offsets stay uncommitted and are retried next
		// round; at worst a restart re-reads changes the versions skip.
		m.p.log.Warn("commit failed", "err", commitErr)
		m.commitFailed.Store(true)
	}
	return nil
}

// commitError is the error of a commit's answer: the request's, else the
// first partition's.
func commitError(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil || resp == nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, part := range t.Partitions {
			if err := kerr.ErrorForCode(part.ErrorCode); err != nil {
				return fmt.Errorf("partition %d: %w", part.Partition, err)
			}
		}
	}
	return nil
}
