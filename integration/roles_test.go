package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/productstream/productstream/loopback"
)

// freeAddr returns a loopback address with a port free right now, outside
// the range outgoing connections take their ports from, and never one it
// returned before in this test binary.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := ports.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// ports hands out the roles' addresses (test-binary state: the ports of
// one run's roles must differ).
var ports loopback.Ports

// startRole runs `productstream ROLE --config FILE` and stops it (SIGTERM)
// when the test ends. A file for the secured backend gets its security
// first (secureConfigFile).
func startRole(t *testing.T, role, cfg string) *exec.Cmd {
	t.Helper()
	secureConfigFile(t, cfg)
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

// closed reports whether done is closed, without waiting.
func closed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
