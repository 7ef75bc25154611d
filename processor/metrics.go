package processor

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	pmetrics "github.com/productstream/productstream/metrics"
)

// metrics are the processor's Prometheus metrics (see metrics.Registry).
var metrics = struct {
	changes          *prometheus.CounterVec
	derived          prometheus.Counter
	deadLetters      prometheus.Counter
	forced           prometheus.Counter
	emitted          *prometheus.CounterVec
	pendingKeys      prometheus.Gauge
	transactions     *prometheus.CounterVec
	restoring        prometheus.Gauge
	restoreRecords   prometheus.Counter
	restoreDuration  prometheus.Histogram
	restoreLastRate  prometheus.Gauge
	assignedPartitns prometheus.Gauge
}{
	changes: promauto.With(pmetrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "productstream_processor_changes_total",
		Help: "Records read from the changes topic, by outcome: applied; replayed (at or below the key's version, skipped); stale (older than the key's state, skipped); no_state_topic (a resource without a state topic).",
	}, []string{"outcome"}),
	derived: promauto.With(pmetrics.Registry).NewCounter(prometheus.CounterOpts{
		Name: "productstream_processor_derived_changes_total",
		Help: "Collection membership changes derived from product and POS changes and written to the changes topic.",
	}),
	deadLetters: promauto.With(pmetrics.Registry).NewCounter(prometheus.CounterOpts{
		Name: "productstream_processor_dead_letters_total",
		Help: "Records sent to the dead letter topic.",
	}),
	forced: promauto.With(pmetrics.Registry).NewCounter(prometheus.CounterOpts{
		Name: "productstream_processor_forced_flushes_total",
		Help: "Keys flushed before their deadline because more than max_pending_keys were buffered.",
	}),
	emitted: promauto.With(pmetrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "productstream_processor_emitted_total",
		Help: "Records written, by kind: state, tombstone, update.",
	}, []string{"kind"}),
	pendingKeys: promauto.With(pmetrics.Registry).NewGauge(prometheus.GaugeOpts{
		Name: "productstream_processor_pending_keys",
		Help: "Keys buffered in the coalescer, waiting for their quiet period or max delay.",
	}),
	transactions: promauto.With(pmetrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "productstream_processor_transactions_total",
		Help: "Exactly-once cycles, by result: committed, aborted.",
	}, []string{"result"}),
	restoring: promauto.With(pmetrics.Registry).NewGauge(prometheus.GaugeOpts{
		Name: "productstream_processor_restoring_partitions",
		Help: "Partitions whose state is being restored now (processing waits for them).",
	}),
	restoreRecords: promauto.With(pmetrics.Registry).NewCounter(prometheus.CounterOpts{
		Name: "productstream_processor_restore_records_total",
		Help: "Records read from the state topics and the pending changelog while restoring; its rate is the restore progress.",
	}),
	restoreDuration: promauto.With(pmetrics.Registry).NewHistogram(prometheus.HistogramOpts{
		Name:    "productstream_processor_restore_duration_seconds",
		Help:    "How long each restore (one assignment's partitions) took.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}),
	restoreLastRate: promauto.With(pmetrics.Registry).NewGauge(prometheus.GaugeOpts{
		Name: "productstream_processor_restore_last_records_per_second",
		Help: "Records per second of the last completed restore.",
	}),
	assignedPartitns: promauto.With(pmetrics.Registry).NewGauge(prometheus.GaugeOpts{
		Name: "productstream_processor_assigned_partitions",
		Help: "Partitions of the changes topic this member owns.",
	}),
}

// The counters' children, looked up once: consume counts every record, and
// written every record emitted.
var (
	changesApplied  = metrics.changes.WithLabelValues("applied")
	changesReplayed = metrics.changes.WithLabelValues("replayed")
	changesStale    = metrics.changes.WithLabelValues("stale")
	changesNoState  = metrics.changes.WithLabelValues("no_state_topic")

	emittedStates     = metrics.emitted.WithLabelValues("state")
	emittedTombstones = metrics.emitted.WithLabelValues("tombstone")
	emittedUpdates    = metrics.emitted.WithLabelValues("update")
)
