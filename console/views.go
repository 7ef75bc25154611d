package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/timeline"
)

// views are the console's pages, in the order of its navigation.
func (s *Server) views() []view {
	return []view{
		{"/", "Overview", s.overview},
		{"/sources", "Sources", s.sources},
		{"/deliveries", "Deliveries and refusals", s.deliveries},
		{"/products", "Product timeline", s.product},
		{"/processor", "Processor", s.processor},
		{"/dead-letters", "Dead letters", s.deadLetters},
		{"/sinks", "Sinks", s.sinks},
	}
}

// kafkaTimeout bounds what one page waits for Kafka.
const kafkaTimeout = 10 * time.Second

// Overview is the front page: one line per view, each linking to it.
type Overview struct {
	Now       time.Time                  `json:"now"`
	Sources   []deliveries.SourceSummary `json:"sources"`
	Accepted  int                        `json:"accepted_15m"`
	Refused   int                        `json:"refused_15m"`
	Instances []string                   `json:"ingest_instances"`
	Processor ProcessorView              `json:"processor"`
	Sinks     []SinkStatus               `json:"sinks"`
	Scrapes   map[string]string          `json:"scrapes"`
}

func (s *Server) overview(ctx context.Context, r *http.Request, p principal) (any, error) {
	o := Overview{Now: s.d.Now(), Sources: s.d.Deliveries.Sources(s.sourceNames()), Instances: s.d.Deliveries.Instances(),
		Scrapes: s.d.Metrics.Scrapes()}
	for _, src := range o.Sources {
		o.Accepted += src.Accepted
		o.Refused += src.Refused
	}
	pv, err := s.processor(ctx, r, p)
	if err != nil {
		return nil, err
	}
	o.Processor = *pv.(*ProcessorView)
	sv, err := s.sinks(ctx, r, p)
	if err != nil {
		return nil, err
	}
	o.Sinks = sv.(*SinksView).Sinks
	return &o, nil
}

func (s *Server) sourceNames() []string {
	names := make([]string, len(s.d.Sources))
	for i, src := range s.d.Sources {
		names[i] = src.Name
	}
	return names
}

// SourcesView is the Sources page: per source, what was accepted and
// refused, why, and when last.
type SourcesView struct {
	Now     time.Time                  `json:"now"`
	Sources []deliveries.SourceSummary `json:"sources"`
}

func (s *Server) sources(context.Context, *http.Request, principal) (any, error) {
	return &SourcesView{Now: s.d.Now(), Sources: s.d.Deliveries.Sources(s.sourceNames())}, nil
}

// DeliveriesView is the Deliveries page: the most recent deliveries,
// filtered.
type DeliveriesView struct {
	Now       time.Time           `json:"now"`
	Filter    DeliveryFilter      `json:"filter"`
	Records   []deliveries.Record `json:"deliveries"`
	Sources   []string            `json:"sources"`
	Instances []string            `json:"ingest_instances"`
	Outcomes  []string            `json:"-"`
}

// DeliveryFilter is the Deliveries page's query, as given.
type DeliveryFilter struct {
	Source  string `json:"source,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Status  string `json:"status,omitempty"`
	Since   string `json:"since,omitempty"`
	Limit   int    `json:"limit"`
}

// maxName bounds a name taken from a query.
const maxName = 200

func (s *Server) deliveries(_ context.Context, r *http.Request, _ principal) (any, error) {
	q := r.URL.Query()
	f := DeliveryFilter{Source: q.Get("source"), Outcome: q.Get("outcome"), Reason: q.Get("reason"),
		Status: q.Get("status"), Since: q.Get("since"), Limit: 100}
	for _, v := range []string{f.Source, f.Outcome, f.Reason, f.Status, f.Since} {
		if len(v) > maxName {
			return nil, badRequest("a filter is longer than %d bytes", maxName)
		}
	}
	df := deliveries.Filter{Source: f.Source, Outcome: f.Outcome, Reason: f.Reason}
	if f.Status != "" {
		n, err := strconv.Atoi(f.Status)
		if err != nil || n < 100 || n > 599 {
			return nil, badRequest("status %q is not an HTTP status", f.Status)
		}
		df.Status = n
	}
	if f.Since != "" {
		since, err := parseSince(f.Since, s.d.Now())
		if err != nil {
			return nil, err
		}
		df.Since = since
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return nil, badRequest("limit %q must be 1 to 1000", l)
		}
		f.Limit = n
	}
	df.Limit = f.Limit
	return &DeliveriesView{Now: s.d.Now(), Filter: f, Records: s.d.Deliveries.Recent(df), Sources: s.sourceNames(),
		Instances: s.d.Deliveries.Instances(), Outcomes: []string{"accepted", "duplicate", "refused"}}, nil
}

// parseSince reads a time filter: a duration back from now ("15m") or an
// RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, badRequest("since %q is neither a duration (15m) nor an RFC 3339 time", v)
	}
	return t, nil
}

// ProductView is the Product timeline page.
type ProductView struct {
	Now time.Time `json:"now"`
	// Key is the product key read, "" before a query.
	Key      string             `json:"key,omitempty"`
	Source   string             `json:"source,omitempty"`
	ID       string             `json:"id,omitempty"`
	Timeline *timeline.Timeline `json:"timeline,omitempty"`
	// Sinks are what each sink holds for the key, in one line each.
	Sinks []SinkVerdict `json:"sinks,omitempty"`
	// Payloads says product fields and JSON are shown (payloads scope).
	Payloads bool     `json:"payloads"`
	Sources  []string `json:"-"`
}

// SinkVerdict is one sink's answer for a key.
type SinkVerdict struct {
	Sink    string `json:"sink"`
	Verdict string `json:"verdict"`
}

func (s *Server) product(ctx context.Context, r *http.Request, p principal) (any, error) {
	q := r.URL.Query()
	v := &ProductView{Now: s.d.Now(), Key: q.Get("key"), Source: q.Get("source"), ID: q.Get("id"),
		Payloads: p.can(config.ScopePayloads), Sources: s.sourceNames()}
	if v.Key == "" && v.ID != "" {
		i := slices.IndexFunc(s.d.Sources, func(src Source) bool { return src.Name == v.Source })
		if i < 0 {
			return nil, badRequest("no source is named %q", v.Source)
		}
		v.Key = s.d.Sources[i].Namespace + ":" + v.ID
	}
	if v.Key == "" {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	query := timeline.Query{Key: v.Key}
	if since := q.Get("since"); since != "" {
		t, err := parseSince(since, s.d.Now())
		if err != nil {
			return nil, err
		}
		query.Since = t
	}
	tl, err := s.d.Timelines.Read(ctx, query)
	if err != nil {
		if errors.Is(err, timeline.ErrBadKey) {
			return nil, badRequest("%v", err)
		}
		return nil, err
	}
	if !v.Payloads {
		withoutPayloads(tl)
	}
	v.Timeline = tl
	v.Sinks = s.explain(ctx, v.Key)
	return v, nil
}

// explain asks every sink about key at once.
func (s *Server) explain(ctx context.Context, key string) []SinkVerdict {
	var out []SinkVerdict
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, sk := range s.d.Sinks {
		if sk.Explain == nil {
			continue
		}
		wg.Go(func() {
			verdict, err := sk.Explain(ctx, key)
			if err != nil {
				s.d.Log.Warn("console: sink explain", "sink", sk.Name, "err", err)
				verdict = "unknown: the sink could not be asked (see the console's log)"
			}
			mu.Lock()
			out = append(out, SinkVerdict{Sink: sk.Name, Verdict: verdict})
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b SinkVerdict) int { return strings.Compare(a.Sink, b.Sink) })
	return out
}

// ProcessorView is the Processor page: per partition of changes, who owns
// it and how far behind it is, and per processor process its counters.
type ProcessorView struct {
	Now        time.Time       `json:"now"`
	Group      string          `json:"group"`
	Partitions []PartitionView `json:"partitions"`
	// LagRecords and LagSeconds are the totals: records unread, and the
	// age of the oldest unread change.
	LagRecords int64          `json:"lag_records"`
	LagSeconds float64        `json:"lag_seconds"`
	Processes  []ProcessStats `json:"processes"`
}

// PartitionView is a group's position on one partition, with its lag in
// seconds.
type PartitionView struct {
	kafka.PartitionLag
	LagSeconds float64 `json:"lag_seconds"`
}

// ProcessStats are one processor process's counters.
type ProcessStats struct {
	Instance           string  `json:"instance"`
	AssignedPartitions float64 `json:"assigned_partitions"`
	PendingKeys        float64 `json:"pending_keys"`
	Restoring          float64 `json:"restoring_partitions"`
	ChangesPerSecond   float64 `json:"changes_per_second"`
	Committed          float64 `json:"transactions_committed"`
	Aborted            float64 `json:"transactions_aborted"`
	DeadLetters        float64 `json:"dead_letters"`
}

func (s *Server) processor(ctx context.Context, _ *http.Request, _ principal) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	now := s.d.Now()
	lags, err := kafka.GroupLag(ctx, s.d.Kafka, s.d.ProcessorGroup, s.d.Changes)
	if err != nil {
		return nil, fmt.Errorf("processor lag: %w", err)
	}
	v := &ProcessorView{Now: now, Group: s.d.ProcessorGroup}
	for _, l := range lags {
		pv := PartitionView{PartitionLag: l, LagSeconds: l.Age(now).Seconds()}
		v.Partitions = append(v.Partitions, pv)
		v.LagRecords += l.Records
		v.LagSeconds = max(v.LagSeconds, pv.LagSeconds)
	}
	byInstance := map[string]*ProcessStats{}
	stats := func(inst string) *ProcessStats {
		if byInstance[inst] == nil {
			byInstance[inst] = &ProcessStats{Instance: inst}
		}
		return byInstance[inst]
	}
	m := s.d.Metrics
	for _, x := range m.Series("productstream_processor_assigned_partitions", nil) {
		stats(x.Instance).AssignedPartitions = x.Value
	}
	for _, x := range m.Series("productstream_processor_pending_keys", nil) {
		stats(x.Instance).PendingKeys = x.Value
	}
	for _, x := range m.Series("productstream_processor_restoring_partitions", nil) {
		stats(x.Instance).Restoring = x.Value
	}
	for _, x := range m.Series("productstream_processor_changes_total", nil) {
		if x.Rate != nil {
			stats(x.Instance).ChangesPerSecond += *x.Rate
		}
	}
	for _, x := range m.Series("productstream_processor_transactions_total", nil) {
		switch x.Labels["result"] {
		case "committed":
			stats(x.Instance).Committed = x.Value
		case "aborted":
			stats(x.Instance).Aborted = x.Value
		}
	}
	for _, x := range m.Series("productstream_processor_dead_letters_total", nil) {
		stats(x.Instance).DeadLetters = x.Value
	}
	for _, st := range byInstance {
		v.Processes = append(v.Processes, *st)
	}
	slices.SortFunc(v.Processes, func(a, b ProcessStats) int { return strings.Compare(a.Instance, b.Instance) })
	return v, nil
}

// withoutPayloads drops every value from t, keeping field names, times,
// versions and positions: what the view scope may see.
func withoutPayloads(t *timeline.Timeline) {
	for i := range t.Changes {
		t.Changes[i].JSON = nil
	}
	for i := range t.Updates {
		t.Updates[i].JSON = nil
	}
	if t.State != nil {
		t.State.JSON = nil
	}
	if t.Pending != nil {
		t.Pending.JSON = nil
	}
}
