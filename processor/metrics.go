package processor

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the processor's Prometheus collectors. Build them with
// NewMetrics and pass them in Config.Metrics. They are safe for concurrent
// use; processors given the same Metrics add up their counts.
type Metrics struct {
	changes         *prometheus.CounterVec
	derived         prometheus.Counter
	deadLetters     prometheus.Counter
	forced          prometheus.Counter
	emitted         *prometheus.CounterVec
	pendingKeys     prometheus.Gauge
	transactions    *prometheus.CounterVec
	restoring       prometheus.Gauge
	restoreRecords  prometheus.Counter
	restoreDuration prometheus.Histogram
	restoreLastRate prometheus.Gauge
	assignedParts   prometheus.Gauge

	// The children of changes and emitted, looked up once: consume counts
	// every record, and written every record emitted. (transactions' appear
	// with the first transaction.)
	changesApplied, changesReplayed, changesStale, changesNoState prometheus.Counter
	emittedStates, emittedTombstones, emittedUpdates              prometheus.Counter
}

// NewMetrics builds the processor's collectors and registers them with
// reg, so that they exist (at zero) from the start. Where reg already
// holds them (an earlier NewMetrics on the same registry: a role run twice
// in one process), the registered collectors are used and the counts add
// up. Any other registration error is returned, and nothing stays
// registered. reg nil: registered nowhere.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newCollectors()
	if reg != nil {
		var added []prometheus.Collector
		err := errors.Join(
			register(reg, &m.changes, &added),
			register(reg, &m.derived, &added),
			register(reg, &m.deadLetters, &added),
			register(reg, &m.forced, &added),
			register(reg, &m.emitted, &added),
			register(reg, &m.pendingKeys, &added),
			register(reg, &m.transactions, &added),
			register(reg, &m.restoring, &added),
			register(reg, &m.restoreRecords, &added),
			register(reg, &m.restoreDuration, &added),
			register(reg, &m.restoreLastRate, &added),
			register(reg, &m.assignedParts, &added),
		)
		if err != nil {
			for _, c := range added {
				reg.Unregister(c)
			}
			return nil, fmt.Errorf("processor metrics: %w", err)
		}
	}
	m.lookUpChildren()
	return m, nil
}

// newMetrics are collectors registered nowhere: Config.Metrics's default.
func newMetrics() *Metrics {
	m := newCollectors()
	m.lookUpChildren()
	return m
}

// register registers *c with reg and appends it to added, or replaces *c
// with the equal collector reg already holds.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C, added *[]prometheus.Collector) error {
	err := reg.Register(*c)
	if err == nil {
		*added = append(*added, *c)
		return nil
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		return err
	}
	existing, ok := are.ExistingCollector.(C)
	if !ok {
		return fmt.Errorf("%w, as a %T", err, are.ExistingCollector)
	}
	*c = existing
	return nil
}

func (m *Metrics) lookUpChildren() {
	m.changesApplied = m.changes.WithLabelValues("applied")
	m.changesReplayed = m.changes.WithLabelValues("replayed")
	m.changesStale = m.changes.WithLabelValues("stale")
	m.changesNoState = m.changes.WithLabelValues("no_state_topic")

	m.emittedStates = m.emitted.WithLabelValues("state")
	m.emittedTombstones = m.emitted.WithLabelValues("tombstone")
	m.emittedUpdates = m.emitted.WithLabelValues("update")
}

// newCollectors builds the collectors, unregistered, children not looked
// up.
func newCollectors() *Metrics {
	return &Metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_processor_changes_total",
			Help: "Records read from the changes topic, by outcome: applied; replayed (at or below the key's version, skipped); stale (older than the key's state, skipped); no_state_topic (a resource without a state topic).",
		}, []string{"outcome"}),
		derived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "productstream_processor_derived_changes_total",
			Help: "Collection membership changes derived from product and POS changes and written to the changes topic.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "productstream_processor_dead_letters_total",
			Help: "Records sent to the dead letter topic.",
		}),
		forced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "productstream_processor_forced_flushes_total",
			Help: "Keys flushed before their deadline because more than max_pending_keys were buffered.",
		}),
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_processor_emitted_total",
			Help: "Records written, by kind: state, tombstone, update.",
		}, []string{"kind"}),
		pendingKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "productstream_processor_pending_keys",
			Help: "Keys buffered in the coalescer, waiting for their quiet period or max delay.",
		}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_processor_transactions_total",
			Help: "Exactly-once cycles, by result: committed, aborted.",
		}, []string{"result"}),
		restoring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "productstream_processor_restoring_partitions",
			Help: "Partitions whose state is being restored now (processing waits for them).",
		}),
		restoreRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "productstream_processor_restore_records_total",
			Help: "Records read from the state topics and the pending changelog while restoring; its rate is the restore progress.",
		}),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "productstream_processor_restore_duration_seconds",
			Help:    "How long each restore (one assignment's partitions) took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		restoreLastRate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "productstream_processor_restore_last_records_per_second",
			Help: "Records per second of the last completed restore.",
		}),
		assignedParts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "productstream_processor_assigned_partitions",
			Help: "Partitions of the changes topic this member owns.",
		}),
	}
}
