package processor

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A deliveryMode is how the cycles of the loop reach Kafka: exactly once
// (exactlyOnce: a transaction per cycle) or at least once (atLeastOnce:
// pipelined writes and watermark commits). It owns the fields only it uses.
//
// changed, write, inFlight, revoke, drop and shutdown are called with the
// processor's mu held, by the loop or by a rebalance callback, so never
// concurrently.
type deliveryMode interface {
	// newClient builds the group member's client from opts and the mode's
	// own options. The rebalance callbacks in opts may run before it
	// returns.
	newClient(opts []kgo.Opt) (*kgo.Client, error)
	// start prepares what the mode writes to, before the first poll. On
	// error it has closed the client.
	start(ctx context.Context) error
	// close ends the client once the loop is done.
	close()

	// changed notes that key, consumed from partition, took a change this
	// cycle. Called for every change applied.
	changed(key string, partition int32)
	// write sends a cycle's outputs: the records of the due keys and the
	// derived changes and dead letters queued on the processor, of a cycle
	// that consumed consumed records. The keys count as written (flushed)
	// once Kafka has them. An error ends Run.
	write(ctx context.Context, consumed int, due []*pending) error
	// inFlight is how many cycles were sent and are not yet accounted for.
	// While there are any, the loop polls at most inflightPoll at a time.
	inFlight() int

	// revoke is called before revoked partitions are dropped.
	revoke(ctx context.Context, parts []int32)
	// drop forgets what the mode holds for partitions revoked or lost.
	drop(parts []int32)

	// drainsOnStop reports whether the records polled after Run's context
	// ended are still applied and written, before shutdown.
	drainsOnStop() bool
	// shutdown ends the mode's work once Run's context has ended, after a
	// cycle; its error is Run's.
	shutdown() error
}

// Run processes until ctx ends. It returns nil after a clean shutdown, or
// the error that stopped it (the process should exit; a restart resumes
// from what was committed).
func (p *Processor) Run(ctx context.Context) error {
	defer p.owned.Store(0) // after close: the member left the group
	if err := p.mode.start(ctx); err != nil {
		return err
	}
	defer p.mode.close()
	for {
		fetches, ok := p.poll(ctx)
		if !ok {
			// A close begun by a failed restore waits for the rebalance
			// the poll blocks to be allowed.
			p.client.AllowRebalance()
			return p.fatal()
		}
		if ctx.Err() != nil && !p.mode.drainsOnStop() {
			return nil // the last poll is left to the next owner
		}
		if err := p.cycle(ctx, fetches); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return p.shutdown()
		}
	}
}

// shutdown has the mode end its work once Run's context has ended.
func (p *Processor) shutdown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode.shutdown()
}

// cycle applies a poll's records, and has the mode write the keys that
// are due and whatever else the records queued. It lets a rebalance go on
// once done.
func (p *Processor) cycle(ctx context.Context, fetches kgo.Fetches) error {
	t0 := time.Now()
	p.mu.Lock()
	records := p.consumeFetches(fetches)
	due := p.due()
	t1 := time.Now()
	err := p.mode.write(ctx, records, due)
	inflight := p.mode.inFlight()
	p.mu.Unlock()
	p.log.Debug("cycle", "records", records, "due", len(due), "in_flight", inflight, "consume", t1.Sub(t0), "write", time.Since(t1))
	p.client.AllowRebalance()
	return err
}

// poll waits for records until the next deadline (at most 250 ms) and logs
// fetch errors. It reports false when the client is closed.
func (p *Processor) poll(ctx context.Context) (kgo.Fetches, bool) {
	pctx, cancel := context.WithTimeout(ctx, p.pollWait())
	fetches := p.client.PollRecords(pctx, 10000)
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

// pollWait is how long a poll may wait for records: until the next
// deadline, at least 1 ms and at most 250 ms.
func (p *Processor) pollWait() time.Duration {
	wait := 250 * time.Millisecond
	if next, ok := p.nextDeadline(); ok {
		wait = min(max(time.Until(next), time.Millisecond), wait)
	}
	return wait
}

// nextDeadline returns the coalescer's next deadline, or a close one while
// writes are in flight, so that their keys soon count as written.
func (p *Processor) nextDeadline() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next, ok := p.co.next()
	if p.mode.inFlight() > 0 {
		if soon := time.Now().Add(inflightPoll); !ok || soon.Before(next) {
			return soon, true
		}
	}
	return next, ok
}

// inflightPoll is the longest poll while writes are in flight.
const inflightPoll = 10 * time.Millisecond
