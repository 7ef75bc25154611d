package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A deliveryMode is how the cycles of the loop reach Kafka: exactly once
// (exactlyOnce: a transaction per cycle) or at least once (atLeastOnce:
// pipelined writes and watermark commits). It owns the fields only it uses.
//
// changed, write, inFlight, revoke, drop, aborted and shutdown are called
// with the processor's mu held, by the loop or by a rebalance callback, so
// never concurrently.
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
	// once Kafka has them. After an error Run has the mode abort, and
	// restores what was committed (recover), unless the error is
	// permanent, which ends Run.
	write(ctx context.Context, consumed int, due []*pending) error
	// abort makes what the cycles since the last commit wrote count for
	// nothing, after a failed cycle: exactly once, the open transaction
	// is aborted and the client consumes from the last commit again; at
	// least once, the records not yet acknowledged are failed. An error
	// (Kafka not answering yet) is retried. Called without mu: it waits
	// for Kafka, and rebalances go on meanwhile.
	abort(ctx context.Context) error
	// aborted forgets what the mode holds for the cycles abort undid. It
	// returns, for each owned partition the client must be sent back on
	// itself, the offset to consume from again.
	aborted() map[int32]int64
	// renew replaces the group member's client with a new one, built from
	// the same options, after the broker fenced its producer (a
	// transaction it timed out while it did not answer, for one): the
	// old one leaves its partitions, which the new one restores as it is
	// assigned them. Called by Run's goroutine, without mu.
	renew() error
	// unpoll has the client return the records of fetches again at the
	// next poll: none of them was applied.
	unpoll(ctx context.Context, fetches kgo.Fetches) error
	// settle waits until what the mode wrote through cl (the group
	// member's client, which a rebalance callback may see before New has
	// returned it) has landed, before a partition is restored, so that
	// the restore reads it.
	settle(ctx context.Context, cl *kgo.Client) error
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
// the permanent error that stopped it (the process should exit; a restart
// resumes from what was committed): ErrChangesLost, credentials or
// authorizations refused. It rides out an outage of Kafka or of the schema
// registry of any length: a cycle that fails for a transient reason is
// aborted, and once Kafka answers again the member restores what was
// committed and carries on (recover). When ctx ends, the cycle in progress
// is finished and committed, and the member leaves the group, so that
// others take its partitions over at once.
func (p *Processor) Run(ctx context.Context) error {
	defer p.owned.Store(0) // after close: the member left the group
	stop := context.AfterFunc(ctx, func() { p.stopOnce.Do(func() { close(p.stopping) }) })
	defer stop()
	if err := p.mode.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	defer p.leave()
	defer p.mode.close()
	// A client of its own for watch, which gives up on a broker that does
	// not answer as soon as watch does.
	if probe, err := kgo.NewClient(append(p.clientOptions(), kgo.DialTimeout(2*maxBackoff), kgo.RequestTimeoutOverhead(2*maxBackoff))...); err == nil {
		wctx, stopWatch := context.WithCancel(ctx)
		defer probe.Close()
		defer stopWatch()
		go p.watch(wctx, probe)
	}
	for {
		if p.mustRecover() {
			if err := p.recover(ctx, nil); err != nil || ctx.Err() != nil {
				return err
			}
		}
		fetches, polled, ok := p.poll(ctx)
		if !ok {
			// A close begun by a failed restore waits for the rebalance
			// the poll blocks to be allowed.
			p.client.AllowRebalance()
			return p.fatal()
		}
		if err := p.pollErrors(ctx, fetches); err != nil {
			p.client.AllowRebalance()
			return err
		}
		if ctx.Err() != nil && !p.mode.drainsOnStop() {
			return nil // the last poll is left to the next owner
		}
		if err := p.resolveSchemas(ctx, fetches); err != nil {
			if errors.Is(err, ErrRegistryUnreachable) {
				if ctx.Err() != nil {
					return p.shutdown() // the records put back are the next owner's
				}
				recycle(fetches)
				continue // polled again
			}
			p.client.AllowRebalance()
			if err := p.recover(ctx, err); err != nil || ctx.Err() != nil {
				return err
			}
			continue
		}
		err := p.cycle(ctx, fetches, polled)
		recycle(fetches)
		switch {
		case err != nil && permanent(err):
			return err
		case err != nil:
			if err := p.recover(ctx, err); err != nil || ctx.Err() != nil {
				return err
			}
		case ctx.Err() != nil:
			return p.shutdown()
		}
	}
}

// recycle gives the buffers of a poll's records back to the member's
// decompression pool once nothing refers to the records any more: a cycle
// keeps nothing of them but copies (the decoded changes, the keys, a dead
// letter's key, value and headers). A poll that ends Run is left to the
// garbage collector.
func recycle(fetches kgo.Fetches) {
	fetches.EachRecord(func(r *kgo.Record) { r.Recycle() })
}

// shutdown has the mode end its work once Run's context has ended. A
// failure that an outage explains leaves the rest to the next owner, which
// reads again what was not committed.
func (p *Processor) shutdown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.mode.shutdown()
	if err != nil && !permanent(err) {
		p.log.Warn("shutdown: left what was not committed to the next owner", "err", err)
		return nil
	}
	return err
}

// cycle applies a poll's records (polled[i]: when fetches[i] came), and
// has the mode write the keys that are due and whatever else the records
// queued. It lets a rebalance go on once done.
func (p *Processor) cycle(ctx context.Context, fetches kgo.Fetches, polled []time.Time) error {
	t0 := time.Now()
	p.mu.Lock()
	records := p.consumeFetches(fetches, polled)
	due := p.due()
	t1 := time.Now()
	err := p.mode.write(ctx, records, due)
	inflight := p.mode.inFlight()
	p.mu.Unlock()
	p.log.Debug("cycle", "records", records, "due", len(due), "in_flight", inflight, "consume", t1.Sub(t0), "write", time.Since(t1))
	p.client.AllowRebalance()
	return err
}

// poll waits for records until the next deadline (at most 250 ms). Then,
// until CommitInterval after the last transaction began (exactly once), it
// goes on gathering what arrives, so that one cycle, and its transaction,
// carries all of it; polled[i] is when fetches[i] came, where each
// record's quiet period starts. Polls in a row let no rebalance in
// between: it waits for the cycle, as ever. It reports false when the
// client is closed.
func (p *Processor) poll(ctx context.Context) (fetches kgo.Fetches, polled []time.Time, ok bool) {
	pctx, cancel := context.WithTimeout(ctx, p.pollWait())
	fetches = p.client.PollRecords(pctx, maxPollRecords)
	cancel()
	polled = arrivedAt(polled, len(fetches), p.now())
	for n := fetches.NumRecords(); !fetches.IsClientClosed() && ctx.Err() == nil && n < maxPollRecords && time.Now().Before(p.nextCycle); {
		pctx, cancel := context.WithDeadline(ctx, p.nextCycle)
		more := p.client.PollRecords(pctx, maxPollRecords-n)
		cancel()
		fetches = append(fetches, more...)
		polled = arrivedAt(polled, len(more), p.now())
		n += more.NumRecords()
	}
	if fetches.IsClientClosed() {
		return nil, nil, false
	}
	return fetches, polled, true
}

// arrivedAt appends n times at to polled.
func arrivedAt(polled []time.Time, n int, at time.Time) []time.Time {
	for range n {
		polled = append(polled, at)
	}
	return polled
}

// maxPollRecords bounds the records of one cycle.
const maxPollRecords = 10000

// pollErrors looks at the errors of a poll: one that says Kafka does not
// answer (a group session lost to it) counts as an outage, a permanent
// one is returned, others are logged. While an outage goes on, it asks
// Kafka now and then whether it answers again: a poll has nothing to say
// while the client waits for it.
func (p *Processor) pollErrors(ctx context.Context, fetches kgo.Fetches) error {
	var perm, suspect error
	fetches.EachError(func(t string, part int32, err error) {
		switch {
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		case permanent(err):
			perm = fmt.Errorf("fetch %s/%d: %w", t, part, err)
		case unreachable(err):
			suspect = err
		default:
			p.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
		}
	})
	switch {
	case perm != nil:
		return perm
	case suspect != nil && !p.kafka.down():
		// franz-go hands over a group session's failure at the next
		// poll, which may come after Kafka answered again.
		if p.ping(ctx) != nil {
			p.kafka.fail(suspect)
		}
		return nil
	case !p.kafka.down():
		return nil
	case fetches.NumRecords() > 0:
		p.answered()
	case time.Now().After(p.nextPing):
		if p.ping(ctx) == nil {
			p.answered()
		}
		p.pings++
		p.nextPing = time.Now().Add(retryBackoff(p.pings))
	}
	if !p.kafka.down() {
		p.pings = 0
	}
	return nil
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
