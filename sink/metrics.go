package sink

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sinks' Prometheus collectors, labelled by sink name (from
// the config, never from a record). A nil *Metrics counts nothing.
type Metrics struct {
	records   *prometheus.CounterVec
	retries   *prometheus.CounterVec
	batches   *prometheus.HistogramVec
	backendUp *prometheus.GaugeVec
	lagGauge  *prometheus.GaugeVec
	fresh     *prometheus.GaugeVec
	oldest    *prometheus.GaugeVec
}

// NewMetrics registers the sink collectors with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "productstream_sink_records_total",
			Help: "Records handled by a sink, by outcome: applied, deleted, stale, dlq, filtered."}, []string{"sink", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "productstream_sink_retries_total",
			Help: "Retried writes, by reason: throttled (the backend asked to wait), timeout, error."}, []string{"sink", "reason"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "productstream_sink_batch_seconds",
			Help:    "Time to handle one batch: decode, write with retries, dead letters, commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"sink"}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "productstream_sink_backend_up",
			Help: "1 while the sink's last write succeeded, 0 while it is retrying."}, []string{"sink"}),
		lagGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "productstream_sink_lag_records",
			Help: "Records the group has yet to read on each partition this process owns, from its committed offset to the last stable offset, measured every 10s; transaction markers and aborted records are not counted."}, []string{"sink", "partition"}),
		fresh: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "productstream_sink_last_applied_timestamp_seconds",
			Help: "Record time of the last applied record (freshness = now - this)."}, []string{"sink"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "productstream_sink_oldest_unapplied_timestamp_seconds",
			Help: "Record time of the oldest record being retried; 0 when none is."}, []string{"sink"}),
	}
	for _, c := range []prometheus.Collector{m.records, m.retries, m.batches, m.backendUp, m.lagGauge, m.fresh, m.oldest} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register sink metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) count(sink, outcome string, n int) {
	if m != nil {
		m.records.WithLabelValues(sink, outcome).Add(float64(n))
	}
}

func (m *Metrics) retry(sink, reason string) {
	if m != nil {
		m.retries.WithLabelValues(sink, reason).Inc()
	}
}

func (m *Metrics) batch(sink string, d time.Duration) {
	if m != nil {
		m.batches.WithLabelValues(sink).Observe(d.Seconds())
	}
}

func (m *Metrics) up(sink string, up bool) {
	if m != nil {
		v := 0.0
		if up {
			v = 1
		}
		m.backendUp.WithLabelValues(sink).Set(v)
	}
}

func (m *Metrics) lag(sink string, partition int32, records int64) {
	if m != nil {
		m.lagGauge.WithLabelValues(sink, strconv.Itoa(int(partition))).Set(float64(max(records, 0)))
	}
}

// forgetLag drops a partition's lag series once this process no longer
// owns it.
func (m *Metrics) forgetLag(sink string, partition int32) {
	if m != nil {
		m.lagGauge.DeleteLabelValues(sink, strconv.Itoa(int(partition)))
	}
}

func (m *Metrics) applied(sink string, at time.Time) {
	if m != nil && !at.IsZero() {
		m.fresh.WithLabelValues(sink).Set(float64(at.UnixMilli()) / 1000)
	}
}

func (m *Metrics) unapplied(sink string, oldest time.Time) {
	if m == nil {
		return
	}
	v := 0.0
	if !oldest.IsZero() {
		v = float64(oldest.UnixMilli()) / 1000
	}
	m.oldest.WithLabelValues(sink).Set(v)
}
