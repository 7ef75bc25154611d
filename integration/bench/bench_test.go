package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// TestMain lets the test binary stand in for the harness binary when the
// harness re-executes itself as a baseline (-serve b1|b2|b3-...).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		os.Exit(childMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness for a few seconds against an in-process
// broker (kfake) and registry (srfake): every phase runs, the results file
// has every section, and every figure is nonzero. The figures themselves
// mean nothing here; real ones come from a real broker (run.sh).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds productstream and runs every phase for a few seconds")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	o, err := parseFlags([]string{
		"-brokers", cluster.ListenAddrs()[0], "-registry", reg.URL(), "-broker-dir", "",
		"-out", out, "-workdir", t.TempDir(),
		"-warmup", "100ms", "-duration", "400ms", "-open-duration", "300ms", "-mixed-duration", "300ms", "-rounds", "1",
		"-concurrency", "4", "-keys", "500", "-partitions", "3",
		"-proc-min-changes", "1000", "-quiet-period", "50ms", "-max-delay", "200ms",
		"-fresh-duration", "500ms", "-fresh-rate", "40",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := run(ctx, o, log)
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range servers {
		for phase, m := range map[string]map[string]*loadResult{"closed": res.closed, "open": res.open, "mixed": res.mixed} {
			l := m[name]
			if l == nil || l.rps() <= 0 || l.pct(0.99) <= 0 || l.cpu["server"] <= 0 && phase == "closed" && name == srvEdge {
				t.Errorf("%s %s: no figures: %+v", name, phase, l)
				continue
			}
			if l.errors() > 0 {
				t.Errorf("%s %s: %d requests not answered 202 (%v, %s)", name, phase, l.errors(), l.status, l.firstErr)
			}
		}
	}
	for _, p := range []*procResult{res.b3, res.alo, res.eos} {
		if p == nil || p.rate() <= 0 || p.changes != res.input.n*int64(o.procRounds) {
			t.Errorf("processor figures missing: %+v", p)
		}
	}
	for _, p := range []*procResult{res.alo, res.eos} {
		if p != nil && (p.updates == 0 || p.counted != p.changes) {
			t.Errorf("%s: %d updates standing for %d changes, want some standing for %d", p.name, p.updates, p.counted, p.changes)
		}
	}
	if res.restore == nil || res.restore.records == 0 || res.b3consume == nil || res.b3consume.Records != res.restore.records {
		t.Errorf("restore %+v beside B3's consumer %+v: want the same nonzero record count", res.restore, res.b3consume)
	}
	if f := res.fresh; f == nil || f.accepted == 0 || f.seen != f.accepted || quantile(f.lat, 0.5) <= 0 {
		t.Errorf("freshness: %+v", f)
	}
	for _, g := range goals(res) {
		if math.IsNaN(g.ratio) && !strings.HasPrefix(g.name, "Coalescer") {
			t.Errorf("target %q has no ratio", g.name)
		}
	}

	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{
		"do not edit by hand", "```sh\ngo run ./integration/bench", "## Targets (issue 6)", "## Machine", "## Settings",
		"## Ingest: maximum throughput", "## Ingest: latency at half", "## Ingest: mixed bodies",
		"## Processor", "## Restore", "## End-to-end freshness", "## Errors", "## How it is measured",
	} {
		if !strings.Contains(string(md), section) {
			t.Errorf("RESULTS.md lacks %q", section)
		}
	}
	if t.Failed() {
		t.Logf("RESULTS.md:\n%s", md)
	}
}

// testWriter sends the harness's log to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
