package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sampler keeps the last two samples of the productstream processes'
// counters: its own process's (a Gatherer) and those of the other
// processes' /metrics URLs (console.scrape), so the console can show
// totals and rates. Its methods are safe for concurrent use.
type Sampler struct {
	local   prometheus.Gatherer
	urls    []string
	client  *http.Client
	every   time.Duration
	log     *slog.Logger
	mu      sync.Mutex
	now     snapshot
	before  snapshot
	scraped map[string]string // URL -> the last scrape's error, "" when it answered
}

// snapshot is one sample of every process.
type snapshot struct {
	at       time.Time
	families []instanceFamilies
}

// instanceFamilies are one process's metric families.
type instanceFamilies struct {
	instance string
	families map[string]*dto.MetricFamily
}

// maxScrapeBytes bounds what one /metrics answer may be.
const maxScrapeBytes = 16 << 20

// NewSampler samples local and the /metrics URLs every interval once Run
// runs.
func NewSampler(local prometheus.Gatherer, urls []string, every time.Duration, log *slog.Logger) *Sampler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sampler{local: local, urls: urls, every: every, log: log,
		client: &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
}

// Run samples until ctx ends; the first sample is taken at once.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample now.
func (s *Sampler) Sample(ctx context.Context) {
	snap := snapshot{at: time.Now()}
	if s.local != nil {
		fams, err := s.local.Gather()
		if err != nil {
			s.log.Warn("console: gathering this process's metrics", "err", err)
		}
		snap.families = append(snap.families, instanceFamilies{"this process", byName(fams)})
	}
	scraped := map[string]string{}
	for _, u := range s.urls {
		fams, err := s.scrape(ctx, u)
		if err != nil {
			scraped[u] = err.Error()
			continue
		}
		scraped[u] = ""
		snap.families = append(snap.families, instanceFamilies{u, fams})
	}
	s.mu.Lock()
	s.before, s.now, s.scraped = s.now, snap, scraped
	s.mu.Unlock()
}

// scrape reads one process's /metrics.
func (s *Sampler) scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxScrapeBytes))
	if err != nil {
		return nil, fmt.Errorf("reading its metrics: %w", err)
	}
	return fams, nil
}

// byName indexes families by name.
func byName(fams []*dto.MetricFamily) map[string]*dto.MetricFamily {
	m := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// Sample is one series' value in one process.
type Sample struct {
	Instance string            `json:"instance"`
	Labels   map[string]string `json:"labels"`
	Value    float64           `json:"value"`
	// Rate is the change per second since the sample before; nil when
	// there was none (or the counter was reset).
	Rate *float64 `json:"rate,omitempty"`
}

// Series returns every series of the metric name whose labels include
// match, in every process sampled, with its rate.
func (s *Sampler) Series(name string, match map[string]string) []Sample {
	s.mu.Lock()
	now, before := s.now, s.before
	s.mu.Unlock()
	var out []Sample
	for _, inst := range now.families {
		f := inst.families[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := labelsOf(m)
			if !matches(labels, match) {
				continue
			}
			v := valueOf(m)
			sample := Sample{Instance: inst.instance, Labels: labels, Value: v}
			if prev, ok := before.value(inst.instance, name, labels); ok && v >= prev && now.at.After(before.at) {
				r := (v - prev) / now.at.Sub(before.at).Seconds()
				sample.Rate = &r
			}
			out = append(out, sample)
		}
	}
	return out
}

// Sum adds up the values and the rates of name's series matching match.
func (s *Sampler) Sum(name string, match map[string]string) (value, rate float64) {
	for _, x := range s.Series(name, match) {
		value += x.Value
		if x.Rate != nil {
			rate += *x.Rate
		}
	}
	return value, rate
}

// Scrapes says, per scraped URL, the last scrape's error ("" when it
// answered).
func (s *Sampler) Scrapes() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scraped
}

// value is a series' value in this snapshot.
func (sn snapshot) value(instance, name string, labels map[string]string) (float64, bool) {
	for _, inst := range sn.families {
		if inst.instance != instance || inst.families[name] == nil {
			continue
		}
		for _, m := range inst.families[name].GetMetric() {
			if l := labelsOf(m); len(l) == len(labels) && matches(l, labels) {
				return valueOf(m), true
			}
		}
	}
	return 0, false
}

func labelsOf(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// valueOf is a counter's, gauge's or untyped metric's value, a histogram's
// count.
func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
