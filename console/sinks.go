package console

import (
	"context"
	"net/http"
	"time"

	"github.com/productstream/productstream/kafka"
)

// SinksView is the Sinks page.
type SinksView struct {
	Now   time.Time    `json:"now"`
	Sinks []SinkStatus `json:"sinks"`
}

// SinkStatus is one sink's state: its rates by outcome, its lag in
// records and seconds, its freshness, whether its backend answers, and a
// rebuild started here.
type SinkStatus struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	From  string `json:"from"`
	Topic string `json:"topic"`
	// Per second over the last sampling interval, and totals, by outcome
	// (applied, deleted, stale, dlq, filtered).
	Rates  map[string]float64 `json:"rates_per_second"`
	Totals map[string]float64 `json:"totals"`
	// LagRecords and LagSeconds: records not yet written, and the age of
	// the oldest of them.
	LagRecords int64   `json:"lag_records"`
	LagSeconds float64 `json:"lag_seconds"`
	// FreshnessSeconds is the age of the last applied record's time; nil
	// before any was applied.
	FreshnessSeconds *float64 `json:"freshness_seconds,omitempty"`
	// BackendUp is false while the sink retries its backend; nil when no
	// process of the sink was sampled.
	BackendUp *bool          `json:"backend_up,omitempty"`
	Rebuild   *RebuildStatus `json:"rebuild,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// sinkOutcomes are the outcomes a sink counts records by.
func sinkOutcomes() []string { return []string{"applied", "deleted", "stale", "dlq", "filtered"} }

func (s *Server) sinks(ctx context.Context, _ *http.Request, _ principal) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	now := s.d.Now()
	v := &SinksView{Now: now}
	for _, sk := range s.d.Sinks {
		st := SinkStatus{Name: sk.Name, Type: sk.Type, From: sk.From, Topic: sk.Topic,
			Rates: map[string]float64{}, Totals: map[string]float64{}}
		for _, o := range sinkOutcomes() {
			st.Totals[o], st.Rates[o] = s.d.Metrics.Sum("productstream_sink_records_total", map[string]string{"sink": sk.Name, "outcome": o})
		}
		if ups := s.d.Metrics.Series("productstream_sink_backend_up", map[string]string{"sink": sk.Name}); len(ups) > 0 {
			up := true
			for _, x := range ups {
				up = up && x.Value == 1
			}
			st.BackendUp = &up
		}
		var last float64
		for _, x := range s.d.Metrics.Series("productstream_sink_last_applied_timestamp_seconds", map[string]string{"sink": sk.Name}) {
			last = max(last, x.Value)
		}
		if last > 0 {
			age := max(0, now.Sub(time.Unix(0, int64(last*1e9))).Seconds())
			st.FreshnessSeconds = &age
		}
		lags, err := kafka.GroupLag(ctx, s.d.Kafka, sk.Group, sk.Topic)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			s.d.Log.Warn("console: sink lag", "sink", sk.Name, "err", err)
			st.Error = "its lag could not be read (see the console's log)"
		}
		for _, l := range lags {
			st.LagRecords += l.Records
			st.LagSeconds = max(st.LagSeconds, l.Age(now).Seconds())
		}
		st.Rebuild = s.rebuilds.status(sk.Name)
		v.Sinks = append(v.Sinks, st)
	}
	return v, nil
}
