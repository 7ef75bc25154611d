package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

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

// startRole runs `productstream ROLE --config FILE` and stops it (SIGTERM)
// when the test ends.
func startRole(t *testing.T, role, cfg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, role, "--config", cfg)
	stderr := &lockedWriter{w: &strings.Builder{}}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s did not exit cleanly on SIGTERM: %v", role, err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s did not stop within 30s of SIGTERM", role)
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", role, stderr.w)
		}
	})
	return cmd
}

// The ingest and process roles run as separate processes against the broker
// and registry their config names, as they are deployed.
func TestSeparateRolesAgainstConfiguredBroker(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	reg := srfake.New()
	defer reg.Close()

	httpAddr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "productstream.yaml")
	os.Setenv("TEST_LISA_SECRET", "s1")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`
kafka:
  brokers: [%q]
  topic_prefix: "acme."
  partitions: 4
schema_registry:
  url: %q
http:
  listen: %q
sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    namespace: shop-eu
    secrets: ["${TEST_LISA_SECRET}"]
    api_keys: ["k1"]
processor:
  quiet_period: 300ms
  max_delay: 1s
`, cluster.ListenAddrs()[0], reg.URL(), httpAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	startRole(t, "ingest", cfg)
	startRole(t, "process", cfg)

	body := []byte(`{"productId":"sku-1","title":"Lamp"}`)
	h := http.Header{}
	h.Set("Authorization", "ApiKey k1")
	h.Set("X-Hmac-Signature", hmacHex("s1", body))
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, err := post("http://"+httpAddr+"/plugin-notifications/plugin-42/updates", h, body)
		if err == nil && status == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest never accepted: %d %v", status, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	serde := newSerde(t, reg.URL())
	for {
		recs := readAll(t, cluster.ListenAddrs()[0], "acme.products")
		if len(recs) == 1 {
			st, err := serde.DecodeState(context.Background(), recs[0].Value)
			if err != nil {
				t.Fatal(err)
			}
			if string(recs[0].Key) != "shop-eu:sku-1" || *st.Fields.Title != "Lamp" {
				t.Fatalf("state %s: %+v", recs[0].Key, st)
			}
			if want := murmur2Partition(recs[0].Key, 4); recs[0].Partition != want {
				t.Fatalf("state of %s on partition %d, Kafka's default partitioner gives %d", recs[0].Key, recs[0].Partition, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no state on acme.products (%d records)", len(recs))
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, r := range readAll(t, cluster.ListenAddrs()[0], "acme.changes") {
		if want := murmur2Partition(r.Key, 4); r.Partition != want {
			t.Fatalf("change %s on partition %d, Kafka's default partitioner gives %d", r.Key, r.Partition, want)
		}
	}
}

// A config error stops a role at start with a message naming the field.
func TestRoleRefusesInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg, []byte("kafka: {brokers: [a:1]}\nschema_registry: {url: http://x}\nsources: [{name: s, provider: nope, secrets: [x]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "ingest", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "sources[0].provider") || !strings.Contains(string(out), `"nope"`) {
		t.Fatalf("want a start-up error naming sources[0].provider and the provider, got %v: %s", err, out)
	}
}
