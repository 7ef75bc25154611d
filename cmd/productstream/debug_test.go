package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/devstack"
	"github.com/productstream/productstream/topics"
)

var testClient = &http.Client{Timeout: 10 * time.Second}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get answers url's status and body.
func get(url string) (int, string, error) {
	resp, err := testClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// getOnceUp retries GET url until something answers (the server may still
// be starting) and returns that first answer's status.
func getOnceUp(t *testing.T, url string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, err := get(url)
		if err == nil {
			return code
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: nothing answered within 60s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertReleased fails unless addr can be bound again, that is its listener
// is closed.
func assertReleased(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s still bound: %v", addr, err)
	}
	ln.Close()
}

// waitForProcessor waits until the processor's consumer group on brokers has
// a member, so that stopping the role tests its shutdown, not an interrupted
// start.
func waitForProcessor(t *testing.T, brokers string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		groups, err := adm.DescribeGroups(ctx, config.DefaultGroup)
		cancel()
		if g, ok := groups[config.DefaultGroup]; err == nil && ok && g.Err == nil && g.State == "Stable" && len(g.Members) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processor group not stable within 60s: %v %+v", err, groups)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// addrLog records the "addr" of every "debug listening" log record.
type addrLog struct {
	mu    sync.Mutex
	addrs []string
}

func (h *addrLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *addrLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *addrLog) WithGroup(string) slog.Handler            { return h }
func (h *addrLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "debug listening" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addr" {
			h.mu.Lock()
			h.addrs = append(h.addrs, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// serveDebug serves pprof, and only pprof, on the address it logs, until stop.
func TestServeDebugServesPprofUntilStopped(t *testing.T) {
	rec := &addrLog{}
	stop, err := serveDebug(t.Context(), "127.0.0.1:0", slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if len(rec.addrs) != 1 || strings.HasSuffix(rec.addrs[0], ":0") {
		t.Fatalf(`want one "debug listening" log with the bound address, got %q`, rec.addrs)
	}
	base := "http://" + rec.addrs[0]

	cases := []struct {
		name, path string
		status     int
		body       string // a substring the body must hold
	}{
		{"index lists the profiles", "/debug/pprof/", http.StatusOK, "goroutine"},
		{"cmdline is this process's", "/debug/pprof/cmdline", http.StatusOK, strings.Join(os.Args, "\x00")},
		{"a named profile through the index", "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"symbol", "/debug/pprof/symbol", http.StatusOK, "num_symbols"},
		{"nothing outside /debug/pprof/", "/metrics", http.StatusNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s: %d %q; want %d with %q", tc.path, code, body, tc.status, tc.body)
			}
		})
	}

	stop()
	assertReleased(t, rec.addrs[0])
	stop() // a second stop is harmless
}

// Ending ctx stops the debug server without stop being called.
func TestServeDebugStopsWithContext(t *testing.T) {
	rec := &addrLog{}
	ctx, cancel := context.WithCancel(t.Context())
	stop, err := serveDebug(ctx, "127.0.0.1:0", slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	addr := rec.addrs[0]
	if code := getOnceUp(t, "http://"+addr+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Fatalf("cmdline: %d", code)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound 10s after ctx ended: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A debug.listen that cannot be bound is an error naming the field and the address.
func TestServeDebugNamesTheFieldWhenListenFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	stop, err := serveDebug(t.Context(), addr, slog.New(slog.DiscardHandler))
	if err == nil {
		stop()
		t.Fatal("serveDebug on a bound address succeeded")
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !strings.Contains(err.Error(), "debug.listen "+addr) {
		t.Fatalf("want a wrapped *net.OpError naming debug.listen %s, got %v", addr, err)
	}
}

// Every role serves pprof on debug.listen, never on its public ingest
// listener, and releases debug.listen when it stops.
func TestRolesServePprofOnlyOnDebugListen(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	stack, err := devstack.Start(devstack.Options{
		DataDir: t.TempDir(), KafkaAddr: "127.0.0.1:0", RegistryAddr: "127.0.0.1:0",
		Topics: topics.For(config.DefaultTopicPrefix).ByKind(), Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()

	devKafka := freeAddr(t)
	cases := []struct {
		name      string
		run       func(ctx context.Context, args []string) error
		args      []string // besides --config and --log-level
		ingest    bool     // has a public ingest listener
		processor string   // the broker of its processor; "": it has none
	}{
		{"dev", runDev, []string{"--data-dir", t.TempDir(), "--kafka-addr", devKafka, "--registry-addr", "127.0.0.1:0"}, true, devKafka},
		{"ingest", runIngestRole, nil, true, ""},
		{"process", runProcessRole, nil, false, stack.KafkaAddr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			debugAddr, ingestAddr := freeAddr(t), freeAddr(t)
			path := filepath.Join(t.TempDir(), "config.yaml")
			cfg := fmt.Sprintf(`
kafka: {brokers: [%q], partitions: 2}
schema_registry: {url: %q}
http: {listen: %q}
sources: [{name: lisa-main, provider: lisa, id: plugin-42, secrets: [s1], api_keys: [k1]}]
debug: {listen: %q}
`, stack.KafkaAddr, stack.RegistryURL, ingestAddr, debugAddr)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				done <- tc.run(ctx, append([]string{"--config", path, "--log-level", "error"}, tc.args...))
			}()
			stopped := false
			stopRole := func() {
				if stopped {
					return
				}
				stopped = true
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("%s did not stop cleanly: %v", tc.name, err)
					}
				case <-time.After(30 * time.Second):
					t.Errorf("%s did not stop within 30s", tc.name)
				}
			}
			defer stopRole()

			if code := getOnceUp(t, "http://"+debugAddr+"/debug/pprof/cmdline"); code != http.StatusOK {
				t.Fatalf("debug.listen /debug/pprof/cmdline: %d, want 200", code)
			}
			if tc.ingest {
				if code := getOnceUp(t, "http://"+ingestAddr+"/healthz"); code != http.StatusOK {
					t.Fatalf("ingest /healthz: %d, want 200", code)
				}
				for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
					code, _, err := get("http://" + ingestAddr + p)
					if err != nil {
						t.Fatal(err)
					}
					if code != http.StatusNotFound {
						t.Fatalf("ingest listener answered %s with %d, want 404", p, code)
					}
				}
			}

			if tc.processor != "" {
				waitForProcessor(t, tc.processor)
			}

			stopRole()
			assertReleased(t, debugAddr)
		})
	}
}
