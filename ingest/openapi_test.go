package ingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/productstream/productstream/config"
)

// The OpenAPI document describes exactly the routes the router serves.
func TestOpenAPIMatchesRouter(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("not an OpenAPI 3 document: %q", doc.OpenAPI)
	}
	param := regexp.MustCompile(`\{[^}]+\}|:[^/]+`)
	var documented, served []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+param.ReplaceAllString(path, "{}"))
		}
	}
	for _, r := range New(nil, Output{}).engine.Routes() {
		served = append(served, r.Method+" "+param.ReplaceAllString(r.Path, "{}"))
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("routes and OpenAPI document differ:\nserved     %v\ndocumented %v", served, documented)
	}
}

// /openapi.json serves the document.
func TestOpenAPIServed(t *testing.T) {
	f := newFixture(t, 5e9)
	resp, err := http.Get(f.url + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&doc) != nil || doc["paths"] == nil {
		t.Fatalf("GET /openapi.json: %d", resp.StatusCode)
	}
}

// The edge's metrics count requests by route template and status, and
// deliveries by source, outcome and reason; a label never holds a name or
// path a sender chose. The public listener serves no /metrics or /healthz:
// those are on the operations listener.
func TestMetricsCountDeliveriesBySourceAndReason(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	gh := config.Source{Name: "gh", Provider: "hmac", Namespace: "gh", Secrets: []string{"s1"},
		Options: acmeOptionsNode(t, "{header: X-Hub-Signature-256, prefix: 'sha256=', payload: {id_pointer: /id}}")}
	other := gh
	other.Name, other.Namespace = "gh-other", "gh-other"
	f := startEdge(t, []config.Source{gh, other}, Deps{}, 5*time.Second, WithObserver(m))
	count := func(source, outcome, reason string) float64 {
		return testutil.ToFloat64(m.deliveries.WithLabelValues(source, outcome, reason))
	}
	body := []byte(`{"id":"m1"}`)
	post := func(path, secret string) int {
		status, _, _ := f.post(path, bytes.NewReader(body), int64(len(body)),
			map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, body)})
		return status
	}
	if post("/webhooks/gh", "s1") != 202 || post("/webhooks/gh", "wrong") != 401 || post("/webhooks/nobody", "s1") != 404 {
		t.Fatal("unexpected statuses")
	}
	f.post("/no/such/path/for/metrics", strings.NewReader("{}"), 2, nil)
	for _, c := range []struct {
		source, outcome, reason string
		want                    float64
	}{
		{"gh", "accepted", "", 1},
		{"gh", "refused", "bad_signature", 1},
		{"gh-other", "accepted", "", 0},
		{"gh-other", "refused", "bad_signature", 0},
		{"(none)", "refused", "unknown_source", 1},
		{"(none)", "refused", "no_route", 1},
	} {
		if got := count(c.source, c.outcome, c.reason); got != c.want {
			t.Errorf("deliveries{source=%q,outcome=%q,reason=%q} = %v, want %v", c.source, c.outcome, c.reason, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("/webhooks/:name", "401")); got != 1 {
		t.Errorf("requests{route=/webhooks/:name,status=401} = %v, want 1", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				if strings.Contains(l.GetValue(), "nobody") || strings.Contains(l.GetValue(), "/no/such") {
					t.Fatalf("%s has a label taken from the URL: %v", mf.GetName(), l)
				}
			}
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/debug/pprof/"} {
		resp, err := http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("the public listener answered GET %s with %d, want 404", path, resp.StatusCode)
		}
	}
}
