package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serve starts h on a loopback port and returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	addr, stop, err := Serve(t.Context(), "127.0.0.1:0", h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "http://" + addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The listener serves the registry's metrics, liveness and pprof.
func TestServesMetricsHealthAndProfiles(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ops_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	base := serve(t, NewHandler(reg))
	if status, body := get(t, base+"/metrics"); status != 200 || !strings.Contains(body, "ops_test_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d, want the counter at 3 and the Go collector", status)
	}
	if status, body := get(t, base+"/healthz"); status != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz: %d %s", status, body)
	}
	if status, body := get(t, base+"/debug/pprof/"); status != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d", status)
	}
	if status, _ := get(t, base+"/webhooks/x"); status != 404 {
		t.Fatalf("an unknown path: %d, want 404", status)
	}
}

// /readyz is 200 only when every check passes; a failing or silent check
// makes it 503 and names itself with its reason.
func TestReadiness(t *testing.T) {
	kafkaDown := errors.New("kafka: no broker answered")
	h := NewHandler(prometheus.NewRegistry(), WithCheckTimeout(200*time.Millisecond),
		WithCheck("registry", func(context.Context) error { return nil }))
	base := serve(t, h)
	readyz := func() (int, map[string]any) {
		status, body := get(t, base+"/readyz")
		var out map[string]any
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("/readyz body %q is not JSON", body)
		}
		return status, out
	}
	if status, out := readyz(); status != 200 || out["status"] != "ready" {
		t.Fatalf("one passing check: %d %v", status, out)
	}
	h.AddCheck("kafka", func(context.Context) error { return kafkaDown })
	status, out := readyz()
	checks, _ := out["checks"].(map[string]any)
	if status != 503 || out["status"] != "not ready" || checks["kafka"] != kafkaDown.Error() || checks["registry"] != "ok" {
		t.Fatalf("a failing check: %d %v", status, out)
	}
	h.AddCheck("kafka", func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // answers only well after its time
		return nil
	})
	status, out = readyz()
	checks, _ = out["checks"].(map[string]any)
	if status != 503 || !strings.Contains(checks["kafka"].(string), "no answer within 200ms") {
		t.Fatalf("a check that never answers: %d %v", status, out)
	}
}

// stop releases the port, and a second stop is harmless.
func TestStopReleasesThePort(t *testing.T) {
	addr, stop, err := Serve(context.Background(), "127.0.0.1:0", NewHandler(prometheus.NewRegistry()), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s still bound after stop: %v", addr, err)
	}
	ln.Close()
	if _, _, err := Serve(context.Background(), "256.0.0.1:1", nil, slog.Default()); err == nil || !strings.Contains(err.Error(), "ops.listen") {
		t.Fatalf("a bad address: %v, want an error naming ops.listen", err)
	}
}

// A role is not ready while it starts (its dependencies may answer before
// it serves) nor once it drains, whatever its other checks say, and each
// says so by name; a draining role answers at once, without running its
// checks. Liveness and metrics are unaffected.
func TestStartingAndDraining(t *testing.T) {
	var slow atomic.Bool
	h := NewHandler(NewRegistry(), WithStarting(), WithCheck("kafka", func(ctx context.Context) error {
		if slow.Load() {
			<-ctx.Done()
		}
		return nil
	}))
	base := serve(t, h)
	readyz := func() (int, map[string]any) {
		status, body := get(t, base+"/readyz")
		var out struct {
			Checks map[string]any `json:"checks"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("/readyz body %q is not JSON", body)
		}
		return status, out.Checks
	}
	if status, checks := readyz(); status != 503 || checks["starting"] != ErrStarting.Error() || checks["kafka"] != "ok" {
		t.Fatalf("starting: %d %v, want 503 naming starting", status, checks)
	}
	h.Started()
	h.Started()
	if status, checks := readyz(); status != 200 || len(checks) != 1 {
		t.Fatalf("started: %d %v, want 200 with the kafka check alone", status, checks)
	}
	h.Drain()
	h.Drain()
	slow.Store(true) // a check that would take the whole timeout
	start := time.Now()
	if status, checks := readyz(); status != 503 || checks["draining"] != ErrDraining.Error() || len(checks) != 1 {
		t.Fatalf("draining: %d %v, want 503 naming draining alone", status, checks)
	}
	if took := time.Since(start); took >= time.Second {
		t.Fatalf("draining: /readyz took %v, want an answer at once", took)
	}
	if status, _ := get(t, base+"/healthz"); status != 200 {
		t.Fatalf("/healthz while draining: %d, want 200", status)
	}
	if status, body := get(t, base+"/metrics"); status != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics while draining: %d", status)
	}
}
