package ingest

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
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

// /metrics serves the Prometheus text format and counts requests by route
// template and status, never by the raw path a sender chose.
func TestMetricsCountRequests(t *testing.T) {
	f := newFixture(t, 5e9)
	count := func() (accepted, unauthorized string, body string) {
		resp, err := http.Get(f.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		line := func(prefix string) string {
			for l := range strings.Lines(string(b)) {
				if strings.HasPrefix(l, prefix) {
					return strings.TrimSpace(strings.TrimPrefix(l, prefix))
				}
			}
			return "0"
		}
		return line(`productstream_ingest_requests_total{route="/plugin-notifications/:id/updates",status="202"} `),
			line(`productstream_ingest_requests_total{route="/plugin-notifications/:id/updates",status="401"} `), string(b)
	}
	a0, u0, _ := count()
	body := []byte(`{"productId":"m1","price":1}`)
	if status, _, _ := f.postSigned("/plugin-notifications/plugin-42/updates", body, "s1", "k1"); status != http.StatusAccepted {
		t.Fatalf("signed: %d", status)
	}
	if status, _, _ := f.postSigned("/plugin-notifications/plugin-42/updates", body, "wrong", "k1"); status != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", status)
	}
	f.post("/no/such/path/for/metrics", strings.NewReader("{}"), 2, nil)
	a1, u1, all := count()
	if a0 == a1 || u0 == u1 {
		t.Fatalf("counters did not move: 202 %s -> %s, 401 %s -> %s", a0, a1, u0, u1)
	}
	if strings.Contains(all, "/no/such/path") || !strings.Contains(all, `route="unmatched"`) || !strings.Contains(all, "go_goroutines") {
		t.Fatalf("labels must be route templates, and the runtime collectors present:\n%s", all)
	}
}
