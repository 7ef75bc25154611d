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

// runAtLeastOnce is the loop of the at-least-once mode: poll, apply, send
// what is due, and commit each partition's watermark. Writes are pipelined:
// a cycle's records are produced without waiting, the loop goes on to the
// next poll, and a key counts as written (so the watermark may pass its
// changes) only once Kafka acknowledged every record of its cycle.
func (p *Processor) runAtLeastOnce(ctx context.Context) error {
	defer p.client.Close()
	for {
		fetches, ok := p.poll(ctx, p.client.PollRecords)
		if !ok {
			return nil
		}
		t0 := time.Now()
		p.mu.Lock()
		records := p.consumeFetches(fetches)
		due := p.due()
		t1 := time.Now()
		p.send(context.WithoutCancel(ctx), due)
		err := p.reap()
		if err == nil {
			p.commitAsync(ctx)
		}
		inflight := len(p.inflight)
		p.mu.Unlock()
		p.log.Debug("cycle", "records", records, "due", len(due), "in_flight", inflight, "consume", t1.Sub(t0), "send", time.Since(t1))
		p.client.AllowRebalance()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return p.shutdown()
		}
	}
}

// shutdown writes everything buffered, waits for it and commits it; Close
// then leaves the group.
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

// A cycle is one loop round's records on their way to Kafka (at least
// once). Its producer callbacks only touch left, err and done, so they
// never wait for mu.
type cycle struct {
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
func (p *Processor) send(ctx context.Context, due []*pending) {
	if len(due) == 0 && len(p.dlq) == 0 && len(p.derived) == 0 {
		return
	}
	c := &cycle{due: due, done: make(chan struct{})}
	p.inflight = append(p.inflight, c)
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
func (p *Processor) reap() error {
	for len(p.inflight) > 0 {
		c := p.inflight[0]
		select {
		case <-c.done:
		default:
			return nil
		}
		if c.err != nil {
			// Left at the head, so every later reap reports it too.
			return fmt.Errorf("write %d state and update records: %w", len(c.records), c.err)
		}
		p.inflight[0] = nil
		p.inflight = p.inflight[1:]
		for _, d := range c.due {
			d.flushed = true
		}
		p.written(c.records)
	}
	return nil
}

// flush sends the due keys and waits until Kafka has acknowledged them and
// every cycle still in flight. Called with mu held.
func (p *Processor) flush(ctx context.Context, due []*pending) error {
	p.send(ctx, due)
	if err := p.client.Flush(ctx); err != nil {
		return fmt.Errorf("wait for the writes in flight: %w", err)
	}
	return p.reap()
}

// moved returns each assigned partition's watermark where it moved past
// what was committed, and takes it as committed. A failed asynchronous
// commit makes every partition count as moved again. Called with mu held.
func (p *Processor) moved() map[int32]kgo.EpochOffset {
	retry := p.commitFailed.Swap(false)
	offsets := map[int32]kgo.EpochOffset{}
	for part, pt := range p.parts {
		if w := pt.watermark(); w > pt.committed || (retry && w >= 0) {
			offsets[part] = kgo.EpochOffset{Epoch: -1, Offset: w}
			pt.committed = w
		}
	}
	return offsets
}

// commitAsync commits the watermarks that moved without waiting; a failure
// is logged and the next round commits again. franz-go keeps commits in
// the order they were issued. Called with mu held.
func (p *Processor) commitAsync(ctx context.Context) {
	offsets := p.moved()
	if len(offsets) == 0 {
		return
	}
	p.client.CommitOffsets(context.WithoutCancel(ctx), map[string]map[int32]kgo.EpochOffset{p.cfg.Topics.Changes: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err = commitError(resp, err); err != nil {
				// Not fatal: at worst a restart re-reads changes the
				// versions skip.
				p.log.Warn("commit failed; retrying next round", "err", err)
				p.commitFailed.Store(true)
			}
		})
}

// commit commits each assigned partition's watermark where it moved, and
// waits for the answer (and for every commit issued before). Called with
// mu held.
func (p *Processor) commit(ctx context.Context) error {
	offsets := p.moved()
	if len(offsets) == 0 {
		return nil
	}
	var commitErr error
	p.client.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{p.cfg.Topics.Changes: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			commitErr = commitError(resp, err)
		})
	if commitErr != nil {
		// Not fatal: the offsets stay uncommitted and are retried next
		// round; at worst a restart re-reads changes the versions skip.
		p.log.Warn("commit failed", "err", commitErr)
		p.commitFailed.Store(true)
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
