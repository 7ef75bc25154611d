package processor

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// due returns the keys to emit now: those past their deadline, and the
// earliest ones beyond MaxPendingKeys. Called with mu held.
func (p *Processor) due() []*pending {
	due := p.co.popDue(p.now())
	if over := p.co.len() - p.cfg.MaxPendingKeys; over > 0 {
		due = append(due, p.co.popEarliest(over)...)
		p.forced += int64(over)
		p.metrics.forced.Add(float64(over))
		p.log.Warn("too many pending keys: flushing early", "keys", over, "max_pending_keys", p.cfg.MaxPendingKeys, "total_forced", p.forced)
	}
	return due
}

// outputs builds the state record (and, for a product, the update record)
// of each due key, then the queued derived changes and dead letters.
// Encoding is spread over the CPUs. Called with mu held.
func (p *Processor) outputs(due []*pending) ([]*kgo.Record, error) {
	now := p.now().UTC()
	perKey := make([][2]*kgo.Record, len(due))
	errs := make([]error, len(due))
	parallel(len(due), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			perKey[i], errs[i] = p.output(due[i], now)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	records := make([]*kgo.Record, 0, 2*len(due)+len(p.derived)+len(p.dlq))
	for _, kr := range perKey {
		for _, r := range kr {
			if r != nil {
				records = append(records, r)
			}
		}
	}
	records = append(records, p.derived...)
	return append(records, p.dlq...), nil
}

// output builds the records of one due key: its state (a tombstone after a
// delete) and, for a product, its update. Keys are distinct, so outputs
// may call it concurrently.
func (p *Processor) output(d *pending, now time.Time) ([2]*kgo.Record, error) {
	var out [2]*kgo.Record
	pt := p.parts[d.partition]
	if pt == nil {
		return out, nil
	}
	e := pt.states[d.key]
	e.render()
	key := []byte(recordKey(d.key))
	headers := []kgo.RecordHeader{{Key: versionHeader, Value: []byte(strconv.FormatInt(e.version, 10))}}
	if e.deleted && e.deletedAt != 0 {
		headers = append(headers, kgo.RecordHeader{Key: deletedAtHeader, Value: []byte(strconv.FormatInt(e.deletedAt, 10))})
	}
	if e.deleted && len(e.state.DedupeFingerprints) > 0 {
		headers = append(headers, kgo.RecordHeader{Key: dedupeHeader, Value: []byte(schemas.FingerprintsText(e.state.DedupeFingerprints))})
	}
	stateRec := &kgo.Record{Topic: p.stateTopics[e.state.Resource], Key: key, Headers: headers}
	out[0] = stateRec
	var st *schemas.State
	if !e.deleted {
		st = &e.state
	}
	if !e.state.IsProduct() {
		if st != nil {
			v, err := p.cfg.Serde.EncodeState(st)
			if err != nil {
				return out, fmt.Errorf("%w state of %s: %w", errEncode, key, err)
			}
			stateRec.Value = v
		}
		return out, nil
	}
	up := schemas.Update{
		Namespace: e.state.Namespace, ProductID: e.state.ProductID, Deleted: e.deleted,
		ChangeCount: int32(d.count), Version: e.version,
		FirstReceivedAt: d.firstRecv, LastReceivedAt: d.lastRecv, EmittedAt: now, State: st,
	}
	sv, uv, err := p.cfg.Serde.EncodeStateAndUpdate(st, &up)
	if err != nil {
		return out, fmt.Errorf("%w state and update of %s: %w", errEncode, key, err)
	}
	stateRec.Value = sv
	out[1] = &kgo.Record{Topic: p.cfg.Topics.Updates, Key: key, Value: uv}
	return out, nil
}

// written accounts for a cycle's records once Kafka has them. Called with
// mu held.
func (p *Processor) written(records []*kgo.Record) {
	for _, r := range records {
		switch {
		case r.Topic == p.cfg.Topics.Updates:
			p.metrics.emittedUpdates.Inc()
		case r.Topic == p.cfg.Topics.DLQ:
			p.metrics.deadLetters.Inc()
		case r.Topic == p.cfg.Topics.Changes || r.Topic == p.pending:
		case r.Value == nil:
			p.metrics.emittedTombstones.Inc()
		default:
			p.metrics.emittedStates.Inc()
		}
	}
	p.metrics.pendingKeys.Set(float64(p.co.len()))
}

// parallel calls fn on contiguous chunks of [0, n), concurrently when n is
// large enough to pay for the goroutines, and returns when all are done.
func parallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/256)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}
