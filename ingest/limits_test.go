package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

func lisaSource(mod func(*config.Source)) []config.Source {
	s := config.Source{Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop-eu",
		Secrets: []string{"s1"}, APIKeys: []string{"k1"}, DedupeWindow: 10 * time.Minute}
	mod(&s)
	return []config.Source{s}
}

func lisaHeaders(body []byte) map[string]string {
	return map[string]string{"Authorization": "ApiKey k1", "X-Hmac-Signature": sign("s1", body)}
}

// Past its rate limit a source gets 429 with Retry-After, and nothing is written.
func TestRateLimitPerSource(t *testing.T) {
	f := startEdge(t, lisaSource(func(s *config.Source) { s.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: 2} }), Deps{}, 5*time.Second)
	var statuses []int
	for i := range 4 {
		body := []byte(fmt.Sprintf(`{"productId":"r%d"}`, i))
		status, resp, h := f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), lisaHeaders(body))
		statuses = append(statuses, status)
		if status == http.StatusTooManyRequests && (h.Get("Retry-After") == "" || resp["error"] == nil) {
			t.Fatalf("429 without Retry-After or error: %v %v", h, resp)
		}
	}
	if fmt.Sprint(statuses) != "[202 202 429 429]" {
		t.Fatalf("statuses %v, want two accepted then 429s", statuses)
	}
	if n := len(f.records()); n != 2 {
		t.Fatalf("%d records written, want 2", n)
	}
}

// LiSA's API key travels in Authorization, so a LiSA source cannot also
// require basic auth: refused at start, naming the field.
func TestLiSARefusesBasicAuthConfig(t *testing.T) {
	_, err := NewSources(lisaSource(func(s *config.Source) {
		s.BasicAuth = &config.BasicAuth{Username: "u", Passwords: []string{"p"}}
	}), Deps{})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "sources[0].basic_auth" {
		t.Fatalf("want a FieldError for sources[0].basic_auth, got %v", err)
	}
}

// LiSA bodies are never deduplicated: an identical body can be a real
// repeat (a price going 10 -> 12 -> 10), so both are written.
func TestIdenticalLiSABodiesAreNotDeduplicated(t *testing.T) {
	f := startEdge(t, lisaSource(func(*config.Source) {}), Deps{}, 5*time.Second)
	for _, price := range []string{"10", "12", "10"} {
		body := []byte(`{"productId":"p","price":` + price + `}`)
		if status, resp, _ := f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), lisaHeaders(body)); status != 202 {
			t.Fatalf("%d %v", status, resp)
		}
	}
	if n := len(f.records()); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}
