package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

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
		if errors.Is(err, ErrChangesLost) {
			p.setFatal(err) // no other member can do better: Run returns it
		}
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
	p.drop(lost[p.cfg.Topics.Changes])
	p.log.Warn("partitions lost", "partitions", lost[p.cfg.Topics.Changes])
}

// drop forgets partitions and everything buffered for them, and says how
// many are left (Assigned and the assigned-partitions gauge): revoked and
// lost alike. Called with mu held.
func (p *Processor) drop(parts []int32) {
	for _, part := range parts {
		p.co.popPartition(part)
		delete(p.parts, part)
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
// member owns a partition of the changes topic (Assigned > 0), else an
// error wrapping ErrNotAssigned. A member that the group gives no
// partition (more members than changes has partitions) is never ready.
func (p *Processor) Ready(context.Context) error {
	if p.Assigned() == 0 {
		return fmt.Errorf("processor group %q, topic %s: %w", p.cfg.Group, p.cfg.Topics.Changes, ErrNotAssigned)
	}
	return nil
}
