package processor

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// changesTotal is productstream_processor_changes_total as a registry
// exposes it with applied at n and the other outcomes at 0.
func changesTotal(applied int) string {
	return fmt.Sprintf(`# HELP productstream_processor_changes_total Records read from the changes topic, by outcome: applied; replayed (at or below the key's version, skipped); stale (older than the key's state, skipped); duplicate (a retry of a change already applied to the key, written again by another ingest replica, skipped); no_state_topic (a resource without a state topic).
# TYPE productstream_processor_changes_total counter
productstream_processor_changes_total{outcome="applied"} %d
productstream_processor_changes_total{outcome="duplicate"} 0
productstream_processor_changes_total{outcome="no_state_topic"} 0
productstream_processor_changes_total{outcome="replayed"} 0
productstream_processor_changes_total{outcome="stale"} 0
`, applied)
}

// Regression (issue 11): two processors with registries of their own
// count apart, where package-level collectors counted both in one.
func TestMetricsCountPerRegistry(t *testing.T) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
		a, b := newEnvOn(t, serde, new(kfake.VirtualNetwork)), newEnvOn(t, serde, new(kfake.VirtualNetwork))
		for _, x := range []struct {
			e   *env
			reg *prometheus.Registry
		}{{a, regA}, {b, regB}} {
			m, err := NewMetrics(x.reg)
			if err != nil {
				t.Fatal(err)
			}
			x.e.run(Config{QuietPeriod: time.Second, MaxDelay: time.Second, Metrics: m})
		}
		check := func(reg *prometheus.Registry, name string, applied int) {
			t.Helper()
			if err := testutil.GatherAndCompare(reg, strings.NewReader(changesTotal(applied)), "productstream_processor_changes_total"); err != nil {
				t.Errorf("%s's registry: %v", name, err)
			}
		}

		a.change("p1", schemas.Fields{Title: str("a")}, false)
		if ups := a.read(a.names.Updates, 1, time.Minute); len(ups) != 1 {
			t.Fatalf("A wrote %d updates, want 1", len(ups))
		}
		check(regA, "A", 1)
		check(regB, "B", 0)

		b.change("p1", schemas.Fields{Title: str("b")}, false)
		b.change("p2", schemas.Fields{Title: str("b")}, false)
		if ups := b.read(b.names.Updates, 2, time.Minute); len(ups) != 2 {
			t.Fatalf("B wrote %d updates, want 2", len(ups))
		}
		check(regA, "A", 1)
		check(regB, "B", 2)
	})
}

// NewMetrics registers every collector, lint-clean; a second NewMetrics on
// the same registry counts on the collectors already there; one that
// cannot register leaves nothing registered.
func TestNewMetrics(t *testing.T) {
	t.Run("registers lint-clean collectors", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := NewMetrics(reg); err != nil {
			t.Fatal(err)
		}
		if n, err := testutil.GatherAndCount(reg); err != nil || n != 20 {
			// 15 collectors: changes has 5 children, emitted 3,
			// transactions none before the first transaction.
			t.Fatalf("gathered %d series (%v), want 20", n, err)
		}
		if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
			t.Fatalf("lint: %v %v", problems, err)
		}
	})
	t.Run("twice on one registry shares the collectors", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m1, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := NewMetrics(reg)
		if err != nil {
			t.Fatalf("second NewMetrics on one registry: %v", err)
		}
		m2.changesApplied.Inc()
		m2.pendingKeys.Set(7)
		if got := testutil.ToFloat64(m1.changesApplied); got != 1 {
			t.Fatalf("applied seen through the first Metrics: %v, want 1", got)
		}
		if got := testutil.ToFloat64(m1.pendingKeys); got != 7 {
			t.Fatalf("pending keys seen through the first Metrics: %v, want 7", got)
		}
	})
	t.Run("a conflict leaves nothing registered", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "productstream_processor_pending_keys", Help: "Something else."}))
		if _, err := NewMetrics(reg); err == nil || !strings.Contains(err.Error(), "productstream_processor_pending_keys") {
			t.Fatalf("NewMetrics: %v, want an error naming productstream_processor_pending_keys", err)
		}
		if n, err := testutil.GatherAndCount(reg); err != nil || n != 1 {
			t.Fatalf("%d series left registered (%v), want only the conflicting one", n, err)
		}
	})
}
