package processor

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// runAtLeastOnce is the loop of the at-least-once mode: poll, apply, write
// what is due, commit each partition's watermark.
func (p *Processor) runAtLeastOnce(ctx context.Context) error {
	defer p.client.Close()
	for {
		fetches, ok := p.poll(ctx, p.client.PollRecords)
		if !ok {
			return nil
		}
		batch := p.decodeAll(fetches)
		p.mu.Lock()
		p.consumeAll(batch)
		err := p.flush(context.WithoutCancel(ctx), p.due())
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

// flush writes the state and an update of each due key, and the queued
// dead letters, and waits for Kafka to acknowledge them all. Called with
// mu held.
func (p *Processor) flush(ctx context.Context, due []*pending) error {
	if len(due) == 0 && len(p.dlq) == 0 && len(p.derived) == 0 {
		return nil
	}
	records, err := p.outputs(due)
	if err != nil {
		return err
	}
	if err := p.client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("write %d state and update records: %w", len(records), err)
	}
	for _, d := range due {
		d.flushed = true
	}
	p.written(records)
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
