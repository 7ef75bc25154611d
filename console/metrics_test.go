package console

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The sampler reads its own process's registry and other processes'
// /metrics over HTTP, gives each series per process with its rate between
// two samples, and says which URL could not be read.
func TestSamplerReadsEveryProcess(t *testing.T) {
	local, remote := prometheus.NewRegistry(), prometheus.NewRegistry()
	mine := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "productstream_sink_records_total"}, []string{"sink", "outcome"})
	theirs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "productstream_sink_records_total"}, []string{"sink", "outcome"})
	local.MustRegister(mine)
	remote.MustRegister(theirs)
	srv := httptest.NewServer(promhttp.HandlerFor(remote, promhttp.HandlerOpts{}))
	defer srv.Close()
	dead := httptest.NewServer(nil)
	dead.Close()

	s := NewSampler(local, []string{srv.URL, dead.URL}, 0, nil)
	mine.WithLabelValues("cache", "applied").Add(10)
	theirs.WithLabelValues("cache", "applied").Add(5)
	theirs.WithLabelValues("cache", "stale").Add(1)
	s.Sample(context.Background())
	if v, r := s.Sum("productstream_sink_records_total", map[string]string{"sink": "cache", "outcome": "applied"}); v != 15 || r != 0 {
		t.Fatalf("first sample: %v, rate %v; want 15 and no rate yet", v, r)
	}
	mine.WithLabelValues("cache", "applied").Add(100)
	s.Sample(context.Background())
	series := s.Series("productstream_sink_records_total", map[string]string{"outcome": "applied"})
	if len(series) != 2 {
		t.Fatalf("got %d series, want one per process: %+v", len(series), series)
	}
	for _, x := range series {
		if x.Rate == nil {
			t.Fatalf("no rate for %+v", x)
		}
		if x.Instance == srv.URL && *x.Rate != 0 || x.Instance != srv.URL && *x.Rate <= 0 {
			t.Errorf("%s: rate %v", x.Instance, *x.Rate)
		}
	}
	scrapes := s.Scrapes()
	if scrapes[srv.URL] != "" || scrapes[dead.URL] == "" {
		t.Fatalf("scrape errors %v: want none for the live URL and one for the closed one", scrapes)
	}
}
