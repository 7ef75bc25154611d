package processor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// assigned restores the state of newly assigned partitions (and, in
// exactly-once mode, their pending buffer) before any of their changes is
// processed. While Kafka does not answer, it retries until it does, or
// until Run stops; polls wait for it meanwhile.
func (p *Processor) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	parts := assigned[p.cfg.Topics.Changes]
	if len(parts) == 0 {
		return
	}
	start := time.Now()
	p.log.Info("restoring partitions", "partitions", parts)
	r, err := p.restoreAssigned(ctx, cl, parts)
	if errors.Is(err, errStopped) {
		return // Run is returning, and the client closing
	}
	if err != nil {
		// Without its state a partition cannot be processed correctly,
		// and retrying does not help: stop the member so that the group
		// moves the partitions on, and Run returns why.
		p.log.Error("restore failed; leaving the group", "partitions", parts, "err", err)
		p.setFatal(err)
		go cl.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.install(parts, r)
	took := time.Since(start)
	p.log.Info("partitions assigned", "partitions", parts, "restored_records", r.records, "pending_keys", len(r.pending),
		"took", took.Round(time.Millisecond), "records_per_s", int(float64(r.records)/max(took.Seconds(), 1e-3)))
}

// errStopped is what restoreAssigned returns once Run has stopped.
var errStopped = errors.New("processor stopped")

// restoreAssigned restores newly assigned partitions, once what the mode
// wrote has landed (settle), retrying with backoff while Kafka does not
// answer, until ctx ends or Run stops. It returns a permanent error.
func (p *Processor) restoreAssigned(ctx context.Context, cl *kgo.Client, parts []int32) (*restored, error) {
	for tries := 1; ; tries++ {
		err := p.mode.settle(ctx, cl)
		var r *restored
		if err == nil {
			r, err = p.restore(ctx, parts)
		}
		if err == nil {
			p.answered()
			return r, nil
		}
		if permanent(err) {
			return nil, err
		}
		p.restoreFailed(fmt.Errorf("restore partitions %v: %w", parts, err))
		t := time.NewTimer(retryBackoff(tries))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, errStopped
		case <-p.stopping:
			t.Stop()
			return nil, errStopped
		}
	}
}

// install puts restored partitions in place (parts: those of r to
// install). Called with mu held.
func (p *Processor) install(parts []int32, r *restored) {
	for _, part := range parts {
		p.parts[part] = &partition{states: r.states[part], stored: r.stored[part], next: -1, committed: -1}
	}
	for _, pe := range r.pending {
		if !slices.Contains(parts, pe.partition) {
			continue
		}
		p.co.restore(pe)
		p.parts[pe.partition].queue = append(p.parts[pe.partition].queue, pe)
	}
	p.countOwned()
}

// countOwned publishes how many partitions are owned now: Assigned and
// the assigned-partitions gauge. Called with mu held, wherever p.parts
// changes (install and drop: an assignment, a revoke, a loss, and the
// restore after an aborted transaction).
func (p *Processor) countOwned() {
	p.metrics.assignedParts.Set(float64(len(p.parts)))
	p.owned.Store(int32(len(p.parts)))
}

// revoked gives up partitions. At least once, it writes what is buffered
// for them and commits it; exactly once, the pending buffer is already in
// its changelog as of the last transaction, so it is just dropped (see
// each mode's revoke).
func (p *Processor) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.rebalancing.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.rebalancing.Store(false)
	parts := revoked[p.cfg.Topics.Changes]
	p.mode.revoke(ctx, parts)
	p.drop(parts)
	p.log.Info("partitions revoked", "partitions", parts)
}

// lost forgets partitions without committing: another member owns them.
func (p *Processor) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.rebalancing.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.rebalancing.Store(false)
	parts := lost[p.cfg.Topics.Changes]
	p.drop(parts)
	if len(parts) > 0 {
		p.log.Warn("partitions lost", "partitions", parts)
	}
}

// drop forgets partitions and everything buffered for them, and says how
// many are left (Assigned and the assigned-partitions gauge): revoked and
// lost alike. Called with mu held.
func (p *Processor) drop(parts []int32) {
	for _, part := range parts {
		p.co.popPartition(part)
		delete(p.parts, part)
		delete(p.unrestored, part)
	}
	p.mode.drop(parts)
	p.countOwned()
}

// ErrNotAssigned is what Ready returns, wrapped, while the member owns no
// partition of the changes topic.
var ErrNotAssigned = errors.New("no partitions assigned yet")

// Assigned is how many partitions of the changes topic the member owns now:
// restored and being processed (a partition still restoring does not
// count yet). It is 0 before the first assignment and once Run has
// returned. Cheap, and safe to call from any goroutine.
func (p *Processor) Assigned() int { return int(p.owned.Load()) }

// Ready is a readiness check in the shape of ops.Check: nil while the
// member owns a partition of the changes topic (Assigned > 0) and Kafka
// and the schema registry answer it. Otherwise an error wrapping
// ErrKafkaUnreachable or ErrRegistryUnreachable during an outage, else
// ErrNotAssigned. A member that the group gives no partition (more
// members than changes has partitions) is never ready.
func (p *Processor) Ready(context.Context) error {
	if err := errors.Join(p.kafka.err(), p.registry.err()); err != nil {
		return fmt.Errorf("processor group %q: %w", p.cfg.Group, err)
	}
	if p.Assigned() == 0 {
		return fmt.Errorf("processor group %q, topic %s: %w", p.cfg.Group, p.cfg.Topics.Changes, ErrNotAssigned)
	}
	return nil
}

// leave takes a static member (Config.InstanceID) out of the group once
// its client is closed. franz-go leaves the group on close only for a
// dynamic member: a static one that restarts takes its own place back. But
// a member that stops on purpose (a rolling restart, a scale-down) should
// let the others take its partitions over at once, not after its session
// timeout.
func (p *Processor) leave() {
	if p.cfg.InstanceID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	cl, err := kgo.NewClient(p.clientOptions()...)
	if err == nil {
		defer cl.Close()
		var left kadm.LeaveGroupResponses
		left, err = kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(p.cfg.Group).InstanceIDs(p.cfg.InstanceID).Reason("productstream process stopping"))
		if err == nil {
			err = left.Error()
		}
	}
	switch {
	case err == nil:
		p.log.Info("left the group", "group", p.cfg.Group, "instance_id", p.cfg.InstanceID)
	case errors.Is(err, kerr.UnknownMemberID):
		// Not (or no longer) a member: nothing to leave.
	default:
		p.log.Warn("could not leave the group: the others take the partitions over once the session times out",
			"group", p.cfg.Group, "instance_id", p.cfg.InstanceID, "err", err)
	}
}

// leaveTimeout bounds leave.
const leaveTimeout = 5 * time.Second
