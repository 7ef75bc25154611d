package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
)

// syncBuffer is a log sink safe for the reloader's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watched is a reloader running on a configuration file, as the ingest
// role runs it, with what it applied.
type watched struct {
	rl      *reloader
	reg     *prometheus.Registry
	log     *syncBuffer
	applied chan []*ingest.Source
}

// lisaConfig is a configuration of one LiSA source whose secret is the
// file secretPath, beside extra.
func lisaConfig(secretPath, extra string) string {
	return fmt.Sprintf("sources:\n  - name: lisa-main\n    provider: lisa\n    secrets: [\"${file:%s}\"]\n    api_keys: [k1]\n%s", secretPath, extra)
}

// write writes content to path in one step: a new file renamed over it.
func write(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// watch loads the configuration at path and runs a reloader on it until
// the test ends.
func watch(t *testing.T, path string) *watched {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	needs := config.Needs{Sources: true}
	if err := cfg.Validate(needs); err != nil {
		t.Fatal(err)
	}
	w := &watched{reg: prometheus.NewRegistry(), log: &syncBuffer{}, applied: make(chan []*ingest.Source, 16)}
	w.rl = newReloader(cfg, needs, slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	stop, err := w.rl.start(context.Background(), w.reg, func(s []*ingest.Source) { w.applied <- s })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return w
}

// watchLisa writes, in a directory of its own, the secret file holding
// secret and a configuration of one LiSA source reading it, beside extra,
// and runs a reloader on it.
func watchLisa(t *testing.T, secret, extra string) (dir, secretPath, path string, w *watched) {
	t.Helper()
	dir = t.TempDir()
	secretPath = filepath.Join(dir, "secret")
	write(t, secretPath, secret)
	path = filepath.Join(dir, "config.yaml")
	write(t, path, lisaConfig(secretPath, extra))
	return dir, secretPath, path, watch(t, path)
}

// next waits for the next set of sources applied, and returns the first
// source's secrets.
func (w *watched) next(t *testing.T) []string {
	t.Helper()
	select {
	case s := <-w.applied:
		return s[0].Secrets
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing applied within 5s; log:\n%s", w.log)
		return nil
	}
}

// none fails the test if sources are applied within d.
func (w *watched) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-w.applied:
		t.Fatalf("applied %q, want nothing; log:\n%s", s[0].Secrets, w.log)
	case <-time.After(d):
	}
}

// eventually fails the test unless cond holds within 5s.
func (w *watched) eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s; log:\n%s", what, w.log)
		}
	}
}

// reloads is reloads_total{result}.
func (w *watched) reloads(result string) float64 {
	return testutil.ToFloat64(w.rl.metrics.reloads.WithLabelValues(result))
}

// hash is the hash label of productstream_config_info.
func (w *watched) hash(t *testing.T) string {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "productstream_config_info" {
			if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
				t.Fatalf("productstream_config_info has %d series, want one of 1", len(mf.GetMetric()))
			}
			return mf.GetMetric()[0].GetLabel()[0].GetValue()
		}
	}
	t.Fatal("no productstream_config_info")
	return ""
}

// A secret mounted as Kubernetes mounts one (the file a link into ..data,
// ..data a link to a directory swapped for a new one) is reloaded when
// the volume is updated, and the info metric's hash follows.
func TestReloaderFollowsAKubernetesVolumeUpdate(t *testing.T) {
	mount, etc := t.TempDir(), t.TempDir()
	version := func(n int, secret string) {
		dir := filepath.Join(mount, fmt.Sprintf("..v%d", n))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(mount, "..data_tmp")
		if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version(1, "s1")
	if err := os.Symlink(filepath.Join("..data", "secret"), filepath.Join(mount, "secret")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(etc, "config.yaml")
	write(t, path, lisaConfig(filepath.Join(mount, "secret"), ""))
	w := watch(t, path)
	before := w.hash(t)

	version(2, "s2")
	if err := os.RemoveAll(filepath.Join(mount, "..v1")); err != nil {
		t.Fatal(err)
	}
	if got := w.next(t); len(got) != 1 || got[0] != "s2" {
		t.Fatalf("applied secrets %q, want [s2]", got)
	}
	if w.reloads("ok") != 1 || w.reloads("refused") != 0 {
		t.Errorf("reloads ok %v refused %v, want 1 and 0", w.reloads("ok"), w.reloads("refused"))
	}
	if after := w.hash(t); after == before || after != w.rl.current.Fingerprint() {
		t.Errorf("config_info hash %s after the update (before: %s), want the fingerprint in force %s", after, before, w.rl.current.Fingerprint())
	}
	if strings.Contains(w.log.String(), "s2") {
		t.Errorf("the log shows the secret:\n%s", w.log)
	}
}

// Other files of the configuration's directory, such as a log written
// beside it, are no reason to read the configuration again; the
// configuration file still is.
func TestReloaderIgnoresOtherFilesOfItsDirectory(t *testing.T) {
	dir, secret, _, w := watchLisa(t, "s0", "")
	logFile, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	for i := range 20 {
		fmt.Fprintf(logFile, "line %d\n", i)
		time.Sleep(20 * time.Millisecond)
	}
	w.none(t, 300*time.Millisecond)
	if out := w.log.String(); strings.Contains(out, "configuration file event") || strings.Contains(out, "the sources did not") {
		t.Fatalf("a log file beside the configuration made it read again:\n%s", out)
	}
	write(t, secret, "s1")
	if got := w.next(t); len(got) != 1 || got[0] != "s1" {
		t.Fatalf("applied secrets %q, want [s1]", got)
	}
}

// A burst of rewrites is read once, when it is over; a change that leaves
// the sources as they are applies nothing.
func TestReloaderDebouncesABurst(t *testing.T) {
	_, secret, path, w := watchLisa(t, "s0", "")
	for i := 1; i <= 10; i++ {
		if err := os.WriteFile(secret, fmt.Appendf(nil, "s%d\n", i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.next(t); got[0] != "s10" {
		t.Fatalf("applied %q, want the last write, s10", got)
	}
	w.none(t, 5*debounce)
	write(t, path, lisaConfig(secret, "# a comment\n"))
	w.none(t, 5*debounce)
	if w.reloads("ok") != 1 {
		t.Errorf("reloads ok %v, want 1", w.reloads("ok"))
	}
}

// A configuration that does not validate or build is refused with the
// field named, counted, and the sources in force stay; a referenced file
// that goes missing is refused the same way; fixing it applies it.
func TestReloaderRefusesAnInvalidConfiguration(t *testing.T) {
	dir, _, path, w := watchLisa(t, "s1", "")
	before := w.hash(t)

	write(t, path, "sources:\n  - {name: lisa-main, provider: lisa, secrets: [s2]}\n") // no api_keys
	w.eventually(t, "one refusal naming sources[0].api_keys", func() bool {
		return w.reloads("refused") == 1 && strings.Contains(w.log.String(), "sources[0].api_keys")
	})
	missing := filepath.Join(dir, "gone")
	write(t, path, lisaConfig(missing, ""))
	w.eventually(t, "a second refusal naming the key and the path of the missing file", func() bool {
		return w.reloads("refused") == 2 && strings.Contains(w.log.String(), "sources[0].secrets[0]") && strings.Contains(w.log.String(), missing)
	})
	w.none(t, 5*debounce)
	if w.hash(t) != before || w.reloads("ok") != 0 {
		t.Fatalf("a refused configuration changed the one in force")
	}
	write(t, missing, "s3")
	if got := w.next(t); got[0] != "s3" {
		t.Fatalf("applied %q, want [s3]", got)
	}
}

// Settings that apply only at start are logged at warn, by key, and keep
// their running values; the sources of the same file are applied.
func TestReloaderKeepsStartOnlySettings(t *testing.T) {
	_, secret, path, w := watchLisa(t, "s1", "http: {listen: \"127.0.0.1:1\"}\n")

	write(t, secret, "s2")
	write(t, path, lisaConfig(secret, "http: {listen: \"127.0.0.1:2\"}\nkafka: {partitions: 3}\n"))
	if got := w.next(t); got[0] != "s2" {
		t.Fatalf("applied %q, want [s2]", got)
	}
	w.eventually(t, "a warning naming kafka and http", func() bool {
		for _, line := range strings.Split(w.log.String(), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "restart to apply them") && strings.Contains(line, `keys="kafka, http"`) {
				return true
			}
		}
		return false
	})
	w.rl.mu.Lock()
	in := w.rl.current
	w.rl.mu.Unlock()
	if in.HTTP.Listen != "127.0.0.1:1" || in.Kafka.Partitions != config.DefaultPartitions || in.Sources[0].Secrets[0] != "s2" {
		t.Errorf("in force: listen %s, partitions %d, secret %s; want the old listen and partitions, the new secret",
			in.HTTP.Listen, in.Kafka.Partitions, in.Sources[0].Secrets[0])
	}
	if w.hash(t) != in.Fingerprint() {
		t.Errorf("config_info shows %s, want the fingerprint in force %s", w.hash(t), in.Fingerprint())
	}
}
