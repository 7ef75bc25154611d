package integration

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startupLaunches is how many times TestBackendStartup launches a member in each
// case.
const startupLaunches = 5

// startupMilestones are the log lines of a starting member, in the order
// it reaches them, that say where its start-up time went: the operations
// listener is up, its topics and schemas are in place, it joined the group
// and restores its partitions, they are restored.
var startupMilestones = []struct{ name, msg string }{
	{"ops listening", "ops listening"},
	{"topics and schemas", "topics and schemas in place"},
	{"joined, restoring", "restoring partitions"},
	{"restored", "partitions assigned"},
}

// `productstream process` becomes assigned and ready, on topics it
// creates and on a group and topics that exist (a restart). Each launch's
// time from launch to assigned is logged with the median, and where it
// went, from the member's log: performance is reported here, never
// asserted.
func TestBackendStartup(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		t.Run("new-topics", func(t *testing.T) {
			var runs []startupRun
			for i := range startupLaunches {
				prefix := uniquePrefix(t)
				cfg, ops := memberConfig(t, b, prefix, prefix+"processor", fmt.Sprintf("p%d", i), false, false)
				runs = append(runs, launchUntilAssigned(t, fmt.Sprintf("p%d", i), cfg, ops))
			}
			logStartup(t, runs)
		})
		t.Run("existing-topics", func(t *testing.T) {
			prefix := uniquePrefix(t)
			group := prefix + "processor"
			cfg, ops := memberConfig(t, b, prefix, group, "first", false, false)
			launchUntilAssigned(t, "first", cfg, ops) // creates the topics and the group
			var runs []startupRun
			for i := range startupLaunches {
				cfg, ops := memberConfig(t, b, prefix, group, fmt.Sprintf("p%d", i), false, false)
				runs = append(runs, launchUntilAssigned(t, fmt.Sprintf("p%d", i), cfg, ops))
			}
			logStartup(t, runs)
		})
	})
}

// startupRun is what one launch took: to be assigned and ready, and to
// reach each of startupMilestones (-1: not logged).
type startupRun struct {
	assigned   time.Duration
	milestones []time.Duration
	log        string // the member's, until it was assigned
}

// launchUntilAssigned launches a member on cfg, waits until it owns every
// partition of the changes topic (3) and /readyz answers 200, then stops
// it with SIGTERM and expects a clean exit.
func launchUntilAssigned(t *testing.T, name, cfg, ops string) startupRun {
	t.Helper()
	start := time.Now()
	m := startMember(t, name, cfg, ops)
	deadline := start.Add(60 * time.Second)
	for {
		if ok, _ := m.ready(); ok && m.assigned() == 3 {
			break
		}
		if m.exited() {
			t.Fatalf("%s exited before it was assigned: %v\n%s", name, m.err, m.logs())
		}
		if time.Now().After(deadline) {
			_, why := m.ready()
			t.Fatalf("%s not assigned and ready 60s after launch (assigned %d, /readyz %s)\n%s", name, m.assigned(), why, m.logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
	logs := m.logs()
	run := startupRun{assigned: time.Since(start), log: logs}
	for _, ms := range startupMilestones {
		run.milestones = append(run.milestones, logged(logs, ms.msg, start))
	}
	m.terminate(t)
	if m.err != nil {
		t.Logf("%s logged:\n%s", name, m.logs())
	}
	return run
}

// logged is when the first line of logs (text format) with message msg
// was written, after start; -1 when none was. The log's times have
// millisecond precision.
func logged(logs, msg string, start time.Time) time.Duration {
	quoted := "msg=" + strconv.Quote(msg)
	if !strings.Contains(msg, " ") {
		quoted = "msg=" + msg
	}
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, " "+quoted+" ") && !strings.HasSuffix(strings.TrimSpace(line), " "+quoted) {
			continue
		}
		stamp, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		stamp, _, _ = strings.Cut(stamp, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			continue
		}
		return at.Sub(start)
	}
	return -1
}

// logStartup logs each run and the medians.
func logStartup(t *testing.T, runs []startupRun) {
	t.Helper()
	var assigned []time.Duration
	for i, r := range runs {
		assigned = append(assigned, r.assigned)
		var at []string
		for j, ms := range startupMilestones {
			if r.milestones[j] >= 0 {
				at = append(at, fmt.Sprintf("%s %v", ms.name, r.milestones[j].Round(time.Millisecond)))
			}
		}
		t.Logf("launch %d: assigned and ready after %v (%s)", i, r.assigned.Round(time.Millisecond), strings.Join(at, ", "))
	}
	t.Logf("launch to assigned and ready: p50 %v (min %v, max %v) over %d launches", median(assigned).Round(time.Millisecond),
		slices.Min(assigned).Round(time.Millisecond), slices.Max(assigned).Round(time.Millisecond), len(runs))
	var b strings.Builder
	fmt.Fprintf(&b, "where it went (p50 since launch, from the member's log):\n")
	for i, ms := range startupMilestones {
		var at []time.Duration
		for _, r := range runs {
			if r.milestones[i] >= 0 {
				at = append(at, r.milestones[i])
			}
		}
		if len(at) == 0 {
			fmt.Fprintf(&b, "  %-20s not logged\n", ms.name)
			continue
		}
		fmt.Fprintf(&b, "  %-20s %v\n", ms.name, median(at).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "  %-20s %v", "assigned and ready", median(assigned).Round(time.Millisecond))
	t.Log(b.String())
	slowest := slices.IndexFunc(runs, func(r startupRun) bool { return r.assigned == slices.Max(assigned) })
	t.Logf("the slowest, launch %d, logged:\n%s", slowest, runs[slowest].log)
}

// median is the middle of ds (the lower of the two middles of an even
// count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
