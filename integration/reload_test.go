package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rotation is a running ingest role whose LiSA source reads its two
// secrets from mounted files.
type rotation struct {
	cmd      *exec.Cmd
	cfg      string // the configuration file
	a, b     string // the secret files
	ingest   string // base URL
	ops      string // base URL
	services string // the kafka and schema_registry sections
}

// rotationConfig is the role's configuration with sources.
func (r *rotation) config(sources string) string {
	return r.services + sources
}

// lisaSecrets is a LiSA source whose secrets are the files a and b.
func lisaSecrets(a, b string) string {
	return fmt.Sprintf(`sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    secrets: ["${file:%s}", "${file:%s}"]
    api_keys: ["k1"]
`, a, b)
}

// startRotation starts `productstream ingest` on an embedded backend, its
// source's secrets the files a (holding secretA) and b (secretB) of a
// mounted directory.
func startRotation(t *testing.T, secretA, secretB string) *rotation {
	t.Helper()
	b := embeddedBackend(t)
	dir, mount := t.TempDir(), t.TempDir()
	r := &rotation{cfg: filepath.Join(dir, "productstream.yaml"), a: filepath.Join(mount, "a"), b: filepath.Join(mount, "b")}
	httpAddr, opsAddr := freeAddr(t), freeAddr(t)
	r.ingest, r.ops = "http://"+httpAddr, "http://"+opsAddr
	r.services = fmt.Sprintf("kafka:\n  brokers: [%q]\n  topic_prefix: %q\n  partitions: 1\nschema_registry:\n  url: %q\nhttp:\n  listen: %q\n  drain_delay: 0s\nops:\n  listen: %q\n",
		b.brokers, uniquePrefix(t), b.registry, httpAddr, opsAddr)
	writeSecret(t, r.a, secretA)
	writeSecret(t, r.b, secretB)
	if err := os.WriteFile(r.cfg, []byte(r.config(lisaSecrets(r.a, r.b))), 0o600); err != nil {
		t.Fatal(err)
	}
	r.cmd = startRole(t, "ingest", r.cfg)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := httpClient.Get(r.ingest + "/openapi.json")
		if err == nil {
			resp.Body.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest did not answer within 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeSecret writes a secret file as a Kubernetes or Docker mount holds
// it: with a trailing newline, the new file renamed over the old one.
func writeSecret(t *testing.T, path, secret string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

var rotationSeq atomic.Int64

// send posts one LiSA notification signed with secret and returns the
// status.
func (r *rotation) send(secret string) (int, error) {
	body := fmt.Appendf(nil, `{"productId":"p-%d","price":1}`, rotationSeq.Add(1))
	h := http.Header{"Authorization": {"ApiKey k1"}, "X-Hmac-Signature": {hmacHex(secret, body)}, "Content-Type": {"application/json"}}
	return post(r.ingest+"/plugin-notifications/plugin-42/updates", h, body)
}

// metric is the value of series (`name{labels}`) on the ops listener's
// /metrics; -1 when it is absent.
func (r *rotation) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := httpClient.Get(r.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return -1
}

// configHash is the hash label of productstream_config_info.
func (r *rotation) configHash(t *testing.T) string {
	t.Helper()
	resp, err := httpClient.Get(r.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(text), "\n") {
		if rest, ok := strings.CutPrefix(line, `productstream_config_info{hash="`); ok {
			hash, _, _ := strings.Cut(rest, `"`)
			return hash
		}
	}
	t.Fatal("no productstream_config_info on /metrics")
	return ""
}

// switchover probes with secret every 5 ms from the moment of a rewrite
// until the answer is want, and returns how long that took. Every answer
// before is the other of 202 and 401; it fails the test after 10 s.
func (r *rotation) switchover(t *testing.T, rewritten time.Time, secret string, want int) time.Duration {
	t.Helper()
	before := http.StatusAccepted
	if want == http.StatusAccepted {
		before = http.StatusUnauthorized
	}
	for {
		status, err := r.send(secret)
		if err != nil {
			t.Fatal(err)
		}
		if status == want {
			return time.Since(rewritten)
		}
		if status != before {
			t.Fatalf("probe before the switch answered %d, want %d", status, before)
		}
		if time.Since(rewritten) > 10*time.Second {
			t.Fatalf("still %d 10 s after the rewrite", status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Rotating a LiSA secret by rewriting its mounted files, while a sender
// posts without pause: the new secret (a file renamed over b) is accepted
// within 2 s and the old one keeps working beside it; once the sender has
// moved on, the old secret (a rewritten in place) is refused within 2 s.
// No request of the sender fails, and a probe's answer changes once.
func TestRotatingASecretByRewritingItsFile(t *testing.T) {
	const old, next = "secret-2025", "secret-2026"
	r := startRotation(t, old, old)
	hash := r.configHash(t)

	var signing atomic.Value
	signing.Store(old)
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var senders sync.WaitGroup
	for range 2 {
		senders.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				secret := signing.Load().(string)
				status, err := r.send(secret)
				sent.Add(1)
				if err != nil || status != http.StatusAccepted {
					failed.Add(1)
					t.Errorf("sender signing with %s: %d %v, want 202", secret, status, err)
				}
			}
		})
	}
	waitSent := func(n int64) {
		for start := sent.Load(); sent.Load() < start+n; {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSent(20)

	// Step 1: the new secret beside the old, as Kubernetes updates a
	// mounted secret (a new file renamed over the old).
	rewritten := time.Now()
	writeSecret(t, r.b, next)
	added := r.switchover(t, rewritten, next, http.StatusAccepted)
	t.Logf("new secret accepted %v after its file was renamed into place", added)
	if added > 2*time.Second {
		t.Errorf("new secret accepted %v after the rewrite, want within 2s", added)
	}
	waitSent(20) // both secrets accepted now: the sender still signs with the old one
	for range 5 {
		if status, err := r.send(next); err != nil || status != http.StatusAccepted {
			t.Fatalf("new secret after the switch: %d %v, want 202", status, err)
		}
	}

	// Step 2: the sender moves to the new secret; step 3: the old one is
	// removed by rewriting its file in place.
	signing.Store(next)
	waitSent(20)
	rewritten = time.Now()
	if err := os.WriteFile(r.a, []byte(next+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed := r.switchover(t, rewritten, old, http.StatusUnauthorized)
	t.Logf("old secret refused %v after its file was rewritten in place", removed)
	if removed > 2*time.Second {
		t.Errorf("old secret refused %v after the rewrite, want within 2s", removed)
	}
	waitSent(20)
	for range 5 {
		if status, err := r.send(old); err != nil || status != http.StatusUnauthorized {
			t.Fatalf("old secret after the switch: %d %v, want 401", status, err)
		}
	}
	close(stop)
	senders.Wait()

	if failed.Load() != 0 {
		t.Errorf("%d of the sender's %d requests failed", failed.Load(), sent.Load())
	}
	if ok := r.metric(t, `productstream_config_reloads_total{result="ok"}`); ok < 2 {
		t.Errorf("reloads ok = %v, want at least 2", ok)
	}
	if r.configHash(t) == hash {
		t.Errorf("config_info hash %s unchanged by the rotation", hash)
	}
	t.Logf("the sender sent %d requests, all accepted", sent.Load())
}

// SIGHUP with an invalid configuration in the file: the reload is
// refused and counted, the configuration in force keeps working and the
// role keeps running; SIGHUP with a valid one reloads it.
func TestSIGHUPRefusesAnInvalidConfiguration(t *testing.T) {
	const secret = "secret-1"
	r := startRotation(t, secret, secret)
	refused := func() float64 { return r.metric(t, `productstream_config_reloads_total{result="refused"}`) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
		}
	}
	if refused() != 0 {
		t.Fatalf("refused = %v at start, want 0", refused())
	}
	// No API key: the file watcher sees it first and refuses it.
	invalid := strings.Replace(r.config(lisaSecrets(r.a, r.b)), `    api_keys: ["k1"]`+"\n", "", 1)
	if err := os.WriteFile(r.cfg, []byte(invalid), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the file change refused", func() bool { return refused() >= 1 })
	time.Sleep(300 * time.Millisecond) // past the debounce of any later event
	before := refused()
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("SIGHUP's reload refused", func() bool { return refused() == before+1 })
	if status, err := r.send(secret); err != nil || status != http.StatusAccepted {
		t.Fatalf("the configuration in force after a refused reload: %d %v, want 202", status, err)
	}
	// The file fixed back to the configuration in force: its file event
	// changes nothing and counts nothing.
	if err := os.WriteFile(r.cfg, []byte(r.config(lisaSecrets(r.a, r.b))), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	ok := r.metric(t, `productstream_config_reloads_total{result="ok"}`)
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("SIGHUP's reload of a valid configuration", func() bool {
		return r.metric(t, `productstream_config_reloads_total{result="ok"}`) == ok+1
	})
	if status, err := r.send(secret); err != nil || status != http.StatusAccepted {
		t.Fatalf("after the valid reload: %d %v, want 202", status, err)
	}
}

// dev reloads its ingest's sources too: a secret file rewritten is in
// force within 2 s, and the secret it replaced is refused.
func TestDevReloadsASecretFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeSecret(t, secret, "dev-1")
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    secrets: ["${file:%s}"]
    api_keys: ["k1"]
`, secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	r := &rotation{ingest: dev.ingest}
	if status, err := r.send("dev-1"); err != nil || status != http.StatusAccepted {
		t.Fatalf("before the rewrite: %d %v, want 202", status, err)
	}
	rewritten := time.Now()
	writeSecret(t, secret, "dev-2")
	if took := r.switchover(t, rewritten, "dev-2", http.StatusAccepted); took > 2*time.Second {
		t.Errorf("new secret accepted %v after the rewrite, want within 2s", took)
	}
	if status, err := r.send("dev-1"); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("the replaced secret: %d %v, want 401", status, err)
	}
}

// The roles that reload nothing (process and sink) keep running on SIGHUP,
// which would otherwise end them, and log that a changed configuration
// needs their restart: one SIGHUP sent to every process after a change
// stops none of them.
func TestSIGHUPLeavesTheOtherRolesRunning(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		prefix := uniquePrefix(t)
		cfg, ops := memberConfig(t, b, prefix, prefix+"processor", "hup", false, false)
		proc := startMember(t, "process", cfg, ops)
		hook := newWebhookReceiver(t)
		cfg, ops = webhookSinkConfig(t, b, prefix, hook)
		snk := startRoleMember(t, "sink", "sink", cfg, ops)
		for _, m := range []*member{proc, snk} {
			waitFor(t, m.name+" ready", time.Minute, func() (bool, string) { return m.ready() })
			if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, m.name+" to log the SIGHUP", 10*time.Second, func() (bool, string) {
				if m.exited() {
					t.Fatalf("%s exited on SIGHUP: %v\n%s", m.name, m.err, m.logs())
				}
				return strings.Contains(m.logs(), "reloads nothing; restart it to apply a changed configuration"), ""
			})
		}
		time.Sleep(500 * time.Millisecond)
		for _, m := range []*member{proc, snk} {
			if ok, saw := m.ready(); !ok || m.exited() {
				t.Errorf("%s after SIGHUP: ready %v (%s), exited %v", m.name, ok, saw, m.exited())
			}
			m.terminate(t)
		}
	})
}
