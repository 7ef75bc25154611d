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
	brokerUp        prometheus.Gauge
	registryUp      prometheus.Gauge
	recoveries      prometheus.Counter

	// The children of changes and emitted, looked up once: consume counts
	// every record, and written every record emitted. (transactions' appear
	// with the first transaction.)
	changesApplied, changesReplayed, changesStale, changesDuplicate, changesNoState prometheus.Counter
	emittedStates, emittedTombstones, emittedUpdates                                prometheus.Counter
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
			register(reg, &m.brokerUp, &added),
			register(reg, &m.registryUp, &added),
			register(reg, &m.recoveries, &added),
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
	m.changesDuplicate = m.changes.WithLabelValues("duplicate")
	m.changesNoState = m.changes.WithLabelValues("no_state_topic")

	m.emittedStates = m.emitted.WithLabelValues("state")
	m.emittedTombstones = m.emitted.WithLabelValues("tombstone")
	m.emittedUpdates = m.emitted.WithLabelValues("update")
}

// newCollectors builds the collectors, unregistered, children not looked
// up.
func newCollectors() *Metrics {
	return &Metrics{
		changes: counterVec("changes_total", "outcome",
			"Records read from the changes topic, by outcome: applied; replayed (at or below the key's version, skipped); stale (older than the key's state, skipped); duplicate (a retry of a change already applied to the key, written again by another ingest replica, skipped); no_state_topic (a resource without a state topic)."),
		derived: counter("derived_changes_total",
			"Collection membership changes derived from product and POS changes and written to the changes topic."),
		deadLetters: counter("dead_letters_total",
			"Records sent to the dead letter topic."),
		forced: counter("forced_flushes_total",
			"Keys flushed before their deadline because more than max_pending_keys were buffered."),
		emitted: counterVec("emitted_total", "kind",
			"Records written, by kind: state, tombstone, update."),
		pendingKeys: gauge("pending_keys",
			"Keys buffered in the coalescer, waiting for their quiet period or max delay."),
		transactions: counterVec("transactions_total", "result",
			"Exactly-once cycles, by result: committed, aborted."),
		restoring: gauge("restoring_partitions",
			"Partitions whose state is being restored now (processing waits for them)."),
		restoreRecords: counter("restore_records_total",
			"Records read from the state topics and the pending changelog while restoring; its rate is the restore progress."),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "restore_duration_seconds",
			Help:    "How long each restore (one assignment's partitions) took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		restoreLastRate: gauge("restore_last_records_per_second",
			"Records per second of the last completed restore."),
		assignedParts: gauge("assigned_partitions",
			"Partitions of the changes topic this member owns."),
		brokerUp: gauge("broker_up",
			"1 while Kafka answers the processor, 0 from the first failure an outage explains until it answers again (processing is paused meanwhile)."),
		registryUp: gauge("registry_up",
			"1 while the schema registry answers for the writer schemas of the changes read, 0 while changes wait for it."),
		recoveries: counter("recoveries_total",
			"Cycles that failed for a transient reason (Kafka not answering, a transaction the broker aborted), after which the processor backed off and restored what was committed."),
	}
}

// metricPrefix begins the name of every processor metric.
const metricPrefix = "productstream_processor_"

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: metricPrefix + name, Help: help})
}

func counterVec(name, label, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + name, Help: help}, []string{label})
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + name, Help: help})
}
