package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
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

// A source with basic auth refuses requests without it, whatever their
// signature, and accepts each rotated password.
func TestBasicAuthRequiredWhenConfigured(t *testing.T) {
	f := startEdge(t, []config.Source{{Name: "gh", Provider: "hmac", Namespace: "ns", Secrets: []string{"s1"},
		HMAC:      &config.HMAC{Header: "X-Hub-Signature-256", Prefix: "sha256="},
		Payload:   &config.Payload{IDPointer: "/id"},
		BasicAuth: &config.BasicAuth{Username: "u", Passwords: []string{"old", "new"}}}}, Deps{}, 5*time.Second)
	cases := []struct {
		name   string
		user   string
		pass   string
		status int
	}{
		{"none", "", "", 401},
		{"wrong password", "u", "nope", 401},
		{"wrong user", "x", "new", 401},
		{"rotated password old", "u", "old", 202},
		{"rotated password new", "u", "new", 202},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(fmt.Sprintf(`{"id":"b%d"}`, i))
			req, _ := http.NewRequest(http.MethodPost, f.url+"/webhooks/gh", bytes.NewReader(body))
			req.Header.Set("X-Hub-Signature-256", "sha256="+sign("s1", body))
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if n := len(f.records()); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}

// A refused delivery's log line names its source and, once verified, its
// delivery id; a refusal before verification names no id (an unverified
// one is only the sender's word).
func TestRefusalLogNamesSourceAndDeliveryID(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := cfgSWSource("sw")
	src.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: 1}
	f := startEdge(t, []config.Source{src}, Deps{}, 5*time.Second, WithLogger(log))
	body := []byte(`{"type":"product.updated","data":{"id":"p1"}}`)
	if status, resp, _ := f.post("/webhooks/sw", bytes.NewReader(body), int64(len(body)), flat(cfgSWSigner("s1", body))); status != http.StatusAccepted {
		t.Fatalf("first delivery: %d %v", status, resp)
	}
	h := cfgSWSigner("s1", body)
	if status, _, _ := f.post("/webhooks/sw", bytes.NewReader(body), int64(len(body)), flat(h)); status != http.StatusTooManyRequests {
		t.Fatalf("second delivery: %d, want 429", status)
	}
	forged := cfgSWSigner("wrong", body)
	forged.Set("Webhook-Id", "msg_forged")
	if status, _, _ := f.post("/webhooks/sw", bytes.NewReader(body), int64(len(body)), flat(forged)); status != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %d, want 401", status)
	}
	lines := strings.Split(logs.String(), "\n")
	var limited, refused string
	for _, l := range lines {
		switch {
		case strings.Contains(l, "status=429"):
			limited = l
		case strings.Contains(l, "status=401"):
			refused = l
		}
	}
	if !strings.Contains(limited, "source=sw") || !strings.Contains(limited, "delivery_id="+h.Get("Webhook-Id")) {
		t.Errorf("the rate-limited line %q lacks the source or the delivery id", limited)
	}
	if !strings.Contains(refused, "source=sw") || strings.Contains(refused, "msg_forged") {
		t.Errorf("the forged delivery's line %q: want its source and not the unverified id", refused)
	}
}

// flat is h with one value per header, as post takes them.
func flat(h http.Header) map[string]string {
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	return m
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
