package main

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/sink/sinktest"
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
// broker (kfake) and registry (srfake), and the real sink backends
// (sinktest.StartBackend: the environment's, else started by
// integration/backends/backends.sh): every phase runs, the results file has
// every section, and every figure is nonzero. The figures themselves mean
// nothing here; real ones come from a real broker (run.sh).
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
	pg, rd, osURL := sinktest.StartBackend(t, "postgres"), sinktest.StartBackend(t, "redis"), sinktest.StartBackend(t, "opensearch")
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	o, err := parseFlags([]string{
		"-brokers", cluster.ListenAddrs()[0], "-registry", reg.URL(), "-broker-dir", "",
		"-out", out, "-workdir", t.TempDir(),
		"-warmup", "100ms", "-duration", "400ms", "-open-duration", "300ms", "-mixed-duration", "300ms", "-rounds", "1",
		"-concurrency", "4", "-keys", "500", "-partitions", "3",
		"-proc-min-changes", "1000", "-quiet-period", "50ms", "-max-delay", "200ms",
		"-restore-records", "3000",
		"-fresh-duration", "500ms", "-fresh-rate", "40",
		"-coalescer-memory=false", // a million keys: slow, and TestParseCoalescerMemory covers the parsing
		"-postgres-dsn", pg, "-redis-addr", rd, "-opensearch-url", osURL,
		"-sink-records", "300", "-sink-rounds", "2", "-sink-fresh-duration", "500ms", "-sink-fresh-rates", "40,80",
		"-startup-launches", "2", "-takeover-session-timeout", "6s",
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
	// The restore reads the topic built for it, of at least -restore-records.
	if in := res.restoreIn; in == nil || in.records < int64(o.restoreRecords) || res.restore == nil || res.restore.records != in.records {
		t.Errorf("restore %+v of the products topic built for it %+v: want all of its records, at least %d", res.restore, in, o.restoreRecords)
	}
	if f := res.fresh; f == nil || f.accepted == 0 || f.seen != f.accepted || quantile(f.lat, 0.5) <= 0 {
		t.Errorf("freshness: %+v", f)
	}
	for _, g := range goals(res) {
		if math.IsNaN(g.ratio) && !strings.HasPrefix(g.name, "Coalescer") {
			t.Errorf("target %q has no ratio", g.name)
		}
	}
	if res.coalescer != nil {
		t.Errorf("coalescer memory measured despite -coalescer-memory=false: %+v", res.coalescer)
	}
	if len(res.profiles) != 2 {
		t.Errorf("%d processor CPU profiles summarized, want one per mode", len(res.profiles))
	}
	for _, p := range res.profiles {
		// A smoke run is too short for its few samples (maybe none) to
		// mean anything; the profiles must be taken and read.
		if len(p.files) == 0 || len(p.areas) != len(profileAreas) || p.top == "" {
			t.Errorf("%s: profiles not taken or not read: %d files, areas %+v, top %q", p.name, len(p.files), p.areas, p.top)
		}
	}

	// Every sink was measured beside its baseline, over the whole input,
	// and every product of the freshness run became visible in OpenSearch.
	if in := res.sinkIn; in == nil || in.records == 0 || int(in.records) != in.accepted {
		t.Errorf("sinks input %+v: want one state record per accepted product", in)
	}
	if len(res.sinks) != len(allSinkKinds) {
		t.Errorf("%d sinks measured, want %d", len(res.sinks), len(allSinkKinds))
	}
	for _, s := range res.sinks {
		for _, run := range []*sinkRun{s.sink, s.base} {
			if run == nil || run.rounds != o.sinkRounds || run.records != res.sinkIn.records*int64(o.sinkRounds) || run.rate() <= 0 || run.batches == 0 {
				t.Errorf("%s: run %+v, want %d rounds over %d records", s.kind, run, o.sinkRounds, res.sinkIn.records)
			}
		}
		if s.ratio() < sinkTarget && len(s.profiles) != 2 {
			t.Errorf("%s below its target: %d profiles, want the sink's and the baseline's", s.kind, len(s.profiles))
		}
	}
	// Every product of each freshness run became visible to a reader of
	// every sink.
	if len(res.sinkFresh) != len(o.sinkFreshRates) {
		t.Errorf("%d freshness runs to the sinks, want one per rate (%v)", len(res.sinkFresh), o.sinkFreshRates)
	}
	for _, f := range res.sinkFresh {
		if f.accepted == 0 || len(f.onKafka) != f.accepted || len(f.produced) != f.accepted || len(f.sinks) != len(allSinkKinds) {
			t.Errorf("freshness to the sinks at %v req/s: %+v", f.rate, f)
		}
		for _, s := range f.sinks {
			if len(s.visible) != f.accepted || len(s.written) != f.accepted || quantile(s.visible, 0.5) <= 0 {
				t.Errorf("freshness to %s at %v req/s: %d visible, %d written of %d", s.kind, f.rate, len(s.visible), len(s.written), f.accepted)
			}
		}
	}
	// Every launch reached consuming, and both takeovers ended.
	if s := res.startup; s == nil || len(s.launches) != o.startupLaunches || s.first == nil || s.dynamic == nil || s.static == nil ||
		s.dynamic.took <= 0 || s.static.took <= 0 || s.dynamic.survivorMax != int(o.parts) {
		t.Errorf("start-up: %+v", s)
	} else {
		for _, l := range s.launches {
			if l.listening <= 0 || l.ready <= 0 || l.consuming <= 0 {
				t.Errorf("launch without figures: %+v", l)
			}
		}
	}

	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{
		"do not edit by hand", "```sh\ngo run ./integration/bench", "## Targets", "## Machine", "## Settings",
		"## Ingest: maximum throughput", "## Ingest: latency at half", "## Ingest: mixed bodies",
		"## Processor", "## Where the processor's CPU goes", "## Restore", "## End-to-end freshness",
		"## Sinks: throughput vs the bare write", "## Freshness to the sinks", "## Start-up and takeover", "## Errors", "## How it is measured",
	} {
		if !strings.Contains(string(md), section) {
			t.Errorf("RESULTS.md lacks %q", section)
		}
	}
	if t.Failed() {
		t.Logf("RESULTS.md:\n%s", md)
	}
}

func TestParseCoalescerMemory(t *testing.T) {
	const pass = `=== RUN   TestCoalescerMemoryPerPendingKey
    bench_test.go:118: coalescer: 187 bytes per pending key (key strings excluded: they belong to the state)
--- PASS: TestCoalescerMemoryPerPendingKey (1.84s)
PASS
ok  	github.com/productstream/productstream/processor	2.113s
`
	for _, tc := range []struct {
		name, out string
		want      float64
		err       string // a substring of the error; "": none
	}{
		{name: "pass", out: pass, want: 187},
		{name: "over target", out: strings.Replace(pass, " 187 ", " 731 ", 1), want: 731},
		{name: "line alone", out: "coalescer: 0 bytes per pending key (key strings excluded: they belong to the state)\n", want: 0},
		{name: "missing line", out: "=== RUN   TestCoalescerMemoryPerPendingKey\n--- PASS: TestCoalescerMemoryPerPendingKey (0.00s)\nPASS\nok  \tgithub.com/productstream/productstream/processor\t0.01s\n",
			err: "no \"coalescer: N bytes per pending key\" line"},
		{name: "empty", out: "", err: "no \"coalescer: N bytes per pending key\" line"},
		{name: "skipped", out: "=== RUN   TestCoalescerMemoryPerPendingKey\n    bench_test.go:101: allocates a million keys\n--- SKIP: TestCoalescerMemoryPerPendingKey (0.00s)\nPASS\n",
			err: "skipped"},
		{name: "no such test", out: "testing: warning: no tests to run\nPASS\nok  \tgithub.com/productstream/productstream/processor\t0.01s [no tests to run]\n",
			err: "no test TestCoalescerMemoryPerPendingKey"},
		{name: "not a number", out: "    bench_test.go:118: coalescer: NaN bytes per pending key (key strings excluded: they belong to the state)\n",
			err: "not a number"},
		{name: "negative", out: "    bench_test.go:118: coalescer: -3 bytes per pending key (key strings excluded: they belong to the state)\n",
			err: "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCoalescerMemory(tc.out)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v, want %v", err, tc.want)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.err)
			case tc.err == "" && got != tc.want:
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCoalescerGoal(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		c                      *coalescerResult
		figure, ratio, verdict string
	}{
		{"not run", nil, "not measured (-coalescer-memory=false)", "—", "not measured"},
		{"pass", &coalescerResult{bytes: 256}, "256 B per pending key", "0.50", "**pass**"},
		{"at target", &coalescerResult{bytes: 512}, "512 B per pending key", "1.00", "**pass**"},
		{"miss", &coalescerResult{bytes: 768}, "768 B per pending key", "1.50", "**miss**"},
		{"failed", &coalescerResult{err: "go test: exit status 1: --- FAIL: TestCoalescerMemoryPerPendingKey (2.00s)"},
			"measurement failed: go test: exit status 1: --- FAIL: TestCoalescerMemoryPerPendingKey (2.00s)", "—", "measurement failed"},
		{"failed, pipe escaped", &coalescerResult{err: "a|b"}, `measurement failed: a\|b`, "—", "measurement failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := coalescerGoal(tc.c)
			if g.figure != tc.figure || ratioText(g.ratio) != tc.ratio || g.verdict() != tc.verdict {
				t.Errorf("figure %q ratio %s verdict %q; want %q, %s, %q", g.figure, ratioText(g.ratio), g.verdict(), tc.figure, tc.ratio, tc.verdict)
			}
		})
	}
}

func TestCoalescerGoTestFailure(t *testing.T) {
	exit1 := errors.New("exit status 1")
	for _, tc := range []struct{ name, out, want string }{
		{"test failed", "=== RUN   TestCoalescerMemoryPerPendingKey\n    bench_test.go:118: coalescer: 187 bytes per pending key (key strings excluded: they belong to the state)\n    bench_test.go:120: 999999\n--- FAIL: TestCoalescerMemoryPerPendingKey (1.90s)\nFAIL\nexit status 1\nFAIL\tgithub.com/productstream/productstream/processor\t2.0s\n",
			"go test: exit status 1: --- FAIL: TestCoalescerMemoryPerPendingKey (1.90s)"},
		{"build failed", "# github.com/productstream/productstream/processor [github.com/productstream/productstream/processor.test]\nprocessor/bench_test.go:12:2: undefined: nope\nFAIL\tgithub.com/productstream/productstream/processor [build failed]\nFAIL\n",
			"go test: exit status 1: processor/bench_test.go:12:2: undefined: nope"},
		{"no output", "", "go test: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := goTestFailure(exit1, tc.out); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// testWriter sends the harness's log to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
