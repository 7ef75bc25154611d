package ingest

import (
	"encoding/json"
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
