package ingest

import (
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Observer is told what the edge decided about every request to a webhook
// route: the seam that metrics, the console's view of recent deliveries and
// an audit trail are implementations of. Observe is called once per
// request, after its answer is decided, from the request's goroutine: it
// must be safe for concurrent use and must not block (it is on the path of
// every delivery).
type Observer interface {
	Observe(Delivery)
}

// Delivery is what the edge decided about one request.
type Delivery struct {
	// Source is the configured source's name; "" when the route named no
	// source (never the name taken from the URL).
	Source string
	// Route is the route template ("/webhooks/:name").
	Route string
	// Status is the HTTP status answered.
	Status int
	// Outcome is accepted, duplicate (answered without writing: a retry
	// or a replay) or refused.
	Outcome Outcome
	// Reason says why a refused request was refused; "" otherwise.
	Reason Reason
	// Records is how many records the delivery wrote, or stands for when
	// it was a duplicate.
	Records int
	// Elapsed is the time from the request's arrival to its answer.
	Elapsed time.Duration
	// At is when the request arrived.
	At time.Time
	// Bytes is how many body bytes were read; for a request refused
	// before its body was read, its Content-Length when it gave one,
	// else 0.
	Bytes int64
	// DeliveryID is the verified delivery's id (Verified.Identity.ID),
	// cut to 200 bytes since the sender chose it; "" when the delivery
	// was not verified or has no id.
	DeliveryID string
	// Written lists the records the delivery wrote, in the order
	// produced, once Kafka acknowledged them all; empty for a refusal
	// and for a duplicate.
	Written []Written
}

// Written is one Kafka record a delivery wrote.
type Written struct {
	Topic     string
	Partition int32
	Offset    int64
	// Key is the record's key ("<namespace>:<id>").
	Key string
	// EventID is the event id the record carries (its event-id header).
	EventID string
}

// maxDeliveryID bounds Delivery.DeliveryID, which the sender chose.
const maxDeliveryID = 200

// truncate cuts s to at most n bytes, at the start of a rune so that valid
// UTF-8 stays valid.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Outcome is what became of a request.
type Outcome string

// The outcomes.
const (
	Accepted  Outcome = "accepted"
	Duplicate Outcome = "duplicate"
	Refused   Outcome = "refused"
)

// Reason is the class of a refusal: a bounded set, fit for a metric label.
type Reason string

// The reasons: one per refusal error (see errors.go), and no_route for a
// request to no webhook route at all.
const (
	ReasonNoRoute            Reason = "no_route"
	ReasonUnknownSource      Reason = "unknown_source"
	ReasonTooLarge           Reason = "too_large"
	ReasonMissingSignature   Reason = "missing_signature"
	ReasonMalformedSignature Reason = "malformed_signature"
	ReasonBadSignature       Reason = "bad_signature"
	ReasonUnauthorized       Reason = "unauthorized"
	ReasonStale              Reason = "stale"
	ReasonForbidden          Reason = "forbidden"
	ReasonRefusalBudget      Reason = "refusal_budget"
	ReasonRateLimited        Reason = "rate_limited"
	ReasonInvalidPayload     Reason = "invalid_payload"
	ReasonUnavailable        Reason = "unavailable"
	ReasonInternal           Reason = "internal"
)

// reasonOf classifies a refusal.
func reasonOf(err error) Reason {
	for _, r := range []struct {
		err    error
		reason Reason
	}{
		{ErrUnknownSource, ReasonUnknownSource},
		{ErrBodyTooLarge, ReasonTooLarge},
		{ErrMissingSignature, ReasonMissingSignature},
		{ErrMalformedSignature, ReasonMalformedSignature},
		{ErrBadSignature, ReasonBadSignature},
		{ErrUnauthorized, ReasonUnauthorized},
		{ErrStale, ReasonStale},
		{ErrForbidden, ReasonForbidden},
		{errTooManyRefusals, ReasonRefusalBudget},
		{ErrRateLimited, ReasonRateLimited},
		{ErrInvalidPayload, ReasonInvalidPayload},
		{ErrUnavailable, ReasonUnavailable},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ReasonInternal
}

// Metrics is the Observer that counts deliveries in Prometheus: requests by
// route and status, their latency by route, and deliveries by source,
// outcome and reason. Build it with NewMetrics.
type Metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	deliveries *prometheus.CounterVec
	// byRoute and byOutcome are the vectors' children Observe has used,
	// by their labels: a request counted again is not hashed again.
	byRoute   children[routeStatus, routeMetrics]
	byOutcome children[sourceOutcome, prometheus.Counter]
}

// routeStatus and sourceOutcome are label sets of the vectors.
type (
	routeStatus struct {
		route  string
		status int
	}
	sourceOutcome struct {
		source  string
		outcome Outcome
		reason  Reason
	}
)

// routeMetrics are the children of one route and status.
type routeMetrics struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// children maps label sets to the metrics resolved for them. Reads take no
// lock: the map is replaced whole, under mu, when a label set is first
// seen. It holds no label set its vectors do not hold already (they keep
// every child), so it is as bounded as they are.
type children[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex
}

// get returns the metrics of k, resolving them with resolve the first time.
func (c *children[K, V]) get(k K, resolve func(K) V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	m := make(map[K]V, 1)
	if old != nil {
		m = maps.Clone(*old)
	}
	v := resolve(k)
	m[k] = v
	c.m.Store(&m)
	return v
}

// unknownSource is the source label of a request whose route named no
// configured source: one bounded value, never the name the URL held, and
// never a source's name (names start with a letter or a digit).
const unknownSource = "(none)"

// NewMetrics registers the edge's metrics with reg, each source's
// accepted and duplicate counts starting at zero.
func NewMetrics(reg prometheus.Registerer, sources []*Source) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_ingest_requests_total",
			Help: "Webhook requests answered, by route template and status code.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "productstream_ingest_request_duration_seconds",
			Help:    "Time from the request's arrival to its answer (for a 2xx: Kafka acknowledged), by route template.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_ingest_deliveries_total",
			Help: "Webhook deliveries by source (\"(none)\" when the route named none), outcome (accepted, duplicate, refused) and the reason of a refusal.",
		}, []string{"source", "outcome", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.deliveries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, src := range sources {
		m.deliveries.WithLabelValues(src.Name, string(Accepted), "")
		m.deliveries.WithLabelValues(src.Name, string(Duplicate), "")
	}
	return m, nil
}

// Observe counts d.
func (m *Metrics) Observe(d Delivery) {
	source := d.Source
	if source == "" {
		source = unknownSource
	}
	r := m.byRoute.get(routeStatus{d.Route, d.Status}, m.routeMetrics)
	r.requests.Inc()
	r.latency.Observe(d.Elapsed.Seconds())
	m.byOutcome.get(sourceOutcome{source, d.Outcome, d.Reason}, m.outcomeCounter).Inc()
}

func (m *Metrics) routeMetrics(k routeStatus) routeMetrics {
	return routeMetrics{requests: m.requests.WithLabelValues(k.route, strconv.Itoa(k.status)), latency: m.latency.WithLabelValues(k.route)}
}

func (m *Metrics) outcomeCounter(k sourceOutcome) prometheus.Counter {
	return m.deliveries.WithLabelValues(k.source, string(k.outcome), string(k.reason))
}
