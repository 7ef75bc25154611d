package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/devstack"
	"github.com/productstream/productstream/loopback"
	"github.com/productstream/productstream/topics"
)

var testClient = &http.Client{Timeout: 10 * time.Second}

// freeAddr returns a loopback address with a port free right now, outside
// the range outgoing connections take their ports from.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := ports.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// ports hands out the test servers' addresses (test-binary state: two
// servers of one test must not be given one port).
var ports loopback.Ports

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

// Every role serves its operations listener on ops.listen: metrics with
// its own parts' series, liveness, readiness once its dependencies answer
// (and, for the processor, once it owns partitions) and pprof. Its public
// ingest listener serves none of them. It releases ops.listen when it stops.
func TestRolesServeOpsOnlyOnOpsListen(t *testing.T) {
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
		metrics   []string // series its /metrics must hold
		console   bool     // serves the console on console.listen
	}{
		{"dev", runDev, []string{"--data-dir", t.TempDir(), "--kafka-addr", devKafka, "--registry-addr", "127.0.0.1:0"}, true, devKafka,
			[]string{`productstream_ingest_deliveries_total{outcome="accepted",reason="",source="lisa-main"} 0`, "productstream_processor_assigned_partitions 2"}, true},
		{"ingest", runIngestRole, nil, true, "", []string{`productstream_ingest_deliveries_total{outcome="accepted",reason="",source="lisa-main"} 0`}, false},
		{"process", runProcessRole, nil, false, stack.KafkaAddr, []string{"productstream_processor_assigned_partitions 2"}, false},
		{"console", runConsoleRole, nil, false, "", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opsAddr, ingestAddr, consoleAddr := freeAddr(t), freeAddr(t), freeAddr(t)
			path := filepath.Join(t.TempDir(), "config.yaml")
			cfg := fmt.Sprintf(`
kafka: {brokers: [%q], partitions: 2}
schema_registry: {url: %q}
http: {listen: %q}
sources: [{name: lisa-main, provider: lisa, id: plugin-42, secrets: [s1], api_keys: [k1]}]
ops: {listen: %q}
console: {listen: %q}
`, stack.KafkaAddr, stack.RegistryURL, ingestAddr, opsAddr, consoleAddr)
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

			ops := "http://" + opsAddr
			if code := getOnceUp(t, ops+"/debug/pprof/cmdline"); code != http.StatusOK {
				t.Fatalf("ops.listen /debug/pprof/cmdline: %d, want 200", code)
			}
			if code, body, err := get(ops + "/healthz"); err != nil || code != http.StatusOK {
				t.Fatalf("ops /healthz: %d %s %v", code, body, err)
			}
			if tc.processor != "" {
				waitForProcessor(t, tc.processor)
			}
			// Ready, and every series of its parts present, once the role
			// has started them all.
			deadline := time.Now().Add(60 * time.Second)
			for {
				readyCode, ready, _ := get(ops + "/readyz")
				_, metrics, _ := get(ops + "/metrics")
				missing := ""
				for _, m := range tc.metrics {
					if !strings.Contains(metrics, m) {
						missing = m
					}
				}
				if readyCode == http.StatusOK && missing == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("ops within 60s: /readyz %d %s; /metrics lacks %q", readyCode, ready, missing)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if tc.console {
				if code := getOnceUp(t, "http://"+consoleAddr+"/api/overview"); code != http.StatusOK {
					t.Fatalf("console /api/overview: %d, want 200", code)
				}
			} else if code, _, err := get("http://" + consoleAddr + "/"); err == nil {
				t.Fatalf("%s serves a console (%d) it was not asked for", tc.name, code)
			}
			if tc.ingest {
				if code := getOnceUp(t, "http://"+ingestAddr+"/openapi.json"); code != http.StatusOK {
					t.Fatalf("ingest /openapi.json: %d, want 200", code)
				}
				for _, p := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/", "/debug/pprof/cmdline"} {
					code, _, err := get("http://" + ingestAddr + p)
					if err != nil {
						t.Fatal(err)
					}
					if code != http.StatusNotFound {
						t.Fatalf("ingest listener answered %s with %d, want 404", p, code)
					}
				}
			}

			stopRole()
			assertReleased(t, opsAddr)
			if tc.console {
				assertReleased(t, consoleAddr)
			}
		})
	}
}
