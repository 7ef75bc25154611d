package main

// Start-up and takeover of `productstream process`: the built binary is
// launched several times against the run's broker (a restart of a one-member
// group each time), and the harness polls its ops listener from the moment
// it starts the process until the member owns every partition
// (productstream_processor_assigned_partitions, which counts a partition once
// it is restored and processed) and /readyz answers 200. Then two members
// share a group and one is killed (SIGKILL: no leave, no commit), and the
// harness times how long until every partition is owned again: by the
// survivor, after the group's session timeout, for dynamic members; by the
// killed member restarted at once with the same processor.instance_id, for
// static ones.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startupTarget is the start-up target: launch to consuming, median.
const startupTarget = time.Second

// startupResult is the start-up section.
type startupResult struct {
	first    *launch   // the first launch, which creates the topics; not in the figures
	launches []*launch // the measured launches, in order
	dynamic  *takeover
	static   *takeover
	// rebalanceDelay is the broker's group.initial.rebalance.delay.ms
	// ("" when it could not be read): a new or empty group waits this long
	// before its first assignment.
	rebalanceDelay string
}

// launch is one start of `productstream process`, timed from just before
// the harness started the process.
type launch struct {
	listening time.Duration // its ops listener answered /healthz
	ready     time.Duration // /readyz answered 200
	consuming time.Duration // productstream_processor_assigned_partitions reached the partition count
}

// takeover is one kill of a member of two.
type takeover struct {
	name   string
	killed int           // partitions the killed member owned
	took   time.Duration // SIGKILL to every partition owned again
	// survivorMax is the most partitions the survivor owned after the
	// kill (static: it should not take the killed member's).
	survivorMax int
}

// consuming returns the launches' start-to-consuming times, sorted.
func (r *startupResult) consuming() []time.Duration {
	var d []time.Duration
	for _, l := range r.launches {
		d = append(d, l.consuming)
	}
	slices.Sort(d)
	return d
}

// member is a running `productstream process` with an ops listener.
type member struct {
	p     *proc
	ops   string // its ops listener's address
	start time.Time
}

// startMember starts `productstream process` on prefix in group, with
// ops.listen set, and returns at once.
func (h *harness) startMember(name, prefix, group, instanceID string, session time.Duration) (*member, error) {
	ops, err := h.ports.Addr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(h.work, name+".yaml")
	if err := writeConfig(cfg, psConfig{brokers: h.o.brokers, registry: h.o.registry, prefix: prefix, partitions: h.o.parts,
		listen: "127.0.0.1:0", maxBody: h.maxBody(), group: group, exactlyOnce: true, quiet: h.o.quietPeriod, maxDelay: h.o.maxDelay,
		commit: &h.o.commitInterval, debug: ops, svc: h.o.svc, instanceID: instanceID, session: session}); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg, err)
	}
	start := time.Now()
	p, err := startProc(name, filepath.Join(h.work, name+".log"), nil, h.bin, "process", "--config", cfg)
	if err != nil {
		return nil, err
	}
	return &member{p: p, ops: ops, start: start}, nil
}

// opsClient is the client of the ops listeners' polls.
var opsClient = &http.Client{Timeout: 2 * time.Second}

// status reads a member's ops listener: whether it answers, whether
// /readyz says ready, and how many partitions it owns (-1: unknown).
func (m *member) status(ctx context.Context) (answers, ready bool, assigned int) {
	assigned = -1
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.ops+path, nil)
		if err != nil {
			return nil, err
		}
		return opsClient.Do(req)
	}
	resp, err := get("/metrics")
	if err != nil {
		return false, false, -1
	}
	assigned = assignedPartitions(bufio.NewScanner(resp.Body))
	resp.Body.Close()
	if resp, err = get("/readyz"); err == nil {
		ready = resp.StatusCode == http.StatusOK
		resp.Body.Close()
	}
	return true, ready, assigned
}

// assignedMetric is the processor's gauge of the partitions it owns.
const assignedMetric = "productstream_processor_assigned_partitions"

// assignedPartitions reads the assigned partitions gauge from a /metrics
// answer in the Prometheus text format; -1 when it is not there.
func assignedPartitions(sc *bufio.Scanner) int {
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || name != assignedMetric {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return -1
		}
		return int(v)
	}
	return -1
}

// statusPoll is how often the ops listeners are polled.
const statusPoll = 10 * time.Millisecond

// waitLaunch polls m until it owns want partitions and is ready, and
// returns its times from its start.
func (h *harness) waitLaunch(ctx context.Context, m *member, want int, timeout time.Duration) (*launch, error) {
	l := &launch{}
	deadline := time.Now().Add(timeout)
	for {
		answers, ready, assigned := m.status(ctx)
		now := time.Since(m.start)
		if answers && l.listening == 0 {
			l.listening = now
		}
		if ready && l.ready == 0 {
			l.ready = now
		}
		if assigned >= want && l.consuming == 0 {
			l.consuming = now
		}
		if l.ready > 0 && l.consuming > 0 {
			return l, nil
		}
		if err := m.p.failed(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: not consuming every partition and ready after %s (assigned %d of %d); log %s", m.p.name, timeout, assigned, want, m.p.logPath)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(statusPoll):
		}
	}
}

// waitShared polls members until they own every partition between them,
// each at least one.
func (h *harness) waitShared(ctx context.Context, ms []*member, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		total, each := 0, true
		for _, m := range ms {
			_, _, a := m.status(ctx)
			total += max(a, 0)
			each = each && a > 0
		}
		if total == int(h.o.parts) && each {
			return nil
		}
		for _, m := range ms {
			if err := m.p.failed(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d members own %d of %d partitions after %s", len(ms), total, h.o.parts, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(statusPoll):
		}
	}
}

// kill ends m with SIGKILL and waits for it.
func (m *member) kill() {
	_ = m.p.cmd.Process.Signal(syscall.SIGKILL)
	<-m.p.exited
}

// runStartup measures the start-up of -startup-launches processes and the
// two takeovers.
func (h *harness) runStartup(ctx context.Context) (*startupResult, error) {
	res := &startupResult{rebalanceDelay: h.brokerConfig(ctx, "group.initial.rebalance.delay.ms")}
	prefix := h.runID + ".startup."
	group := h.runID + "-startup"
	parts := int(h.o.parts)
	for i := range h.o.startupLaunches + 1 {
		name := fmt.Sprintf("startup%d", i)
		m, err := h.startMember(name, prefix, group, "", 0)
		if err != nil {
			return nil, err
		}
		l, err := h.waitLaunch(ctx, m, parts, 3*time.Minute)
		m.p.stop(30 * time.Second)
		if err != nil {
			return nil, err
		}
		h.log.Info("launch", "n", i, "listening", l.listening, "ready", l.ready, "consuming", l.consuming)
		if i == 0 {
			res.first = l
		} else {
			res.launches = append(res.launches, l)
		}
	}
	var err error
	if res.dynamic, err = h.measureTakeover(ctx, prefix, false); err != nil {
		return nil, fmt.Errorf("takeover, dynamic members: %w", err)
	}
	h.log.Info("takeover", "members", "dynamic", "took", res.dynamic.took)
	if res.static, err = h.measureTakeover(ctx, prefix, true); err != nil {
		return nil, fmt.Errorf("takeover, static members: %w", err)
	}
	h.log.Info("takeover", "members", "static", "took", res.static.took)
	return res, nil
}

// measureTakeover starts two members in a new group on prefix, waits until
// they share the partitions, kills the first with SIGKILL and times how
// long until every partition is owned again. With static, both have a
// processor.instance_id and the killed one is started again at once with
// its id; else the survivor must take the partitions over once the
// group's session timeout has passed.
func (h *harness) measureTakeover(ctx context.Context, prefix string, static bool) (*takeover, error) {
	kind := "dynamic"
	if static {
		kind = "static"
	}
	t := &takeover{name: kind}
	group := h.runID + "-takeover-" + kind
	id := func(s string) string {
		if static {
			return "bench-" + s
		}
		return ""
	}
	a, err := h.startMember("takeover-"+kind+"-a", prefix, group, id("a"), h.o.sessionTimeout)
	if err != nil {
		return nil, err
	}
	defer a.p.stop(30 * time.Second)
	if _, err := h.waitLaunch(ctx, a, int(h.o.parts), 3*time.Minute); err != nil {
		return nil, err
	}
	b, err := h.startMember("takeover-"+kind+"-b", prefix, group, id("b"), h.o.sessionTimeout)
	if err != nil {
		return nil, err
	}
	defer b.p.stop(30 * time.Second)
	if err := h.waitShared(ctx, []*member{a, b}, 3*time.Minute); err != nil {
		return nil, err
	}
	_, _, t.killed = a.status(ctx)
	killedAt := time.Now()
	a.kill()
	owners := []*member{b}
	if static {
		a2, err := h.startMember("takeover-"+kind+"-a2", prefix, group, id("a"), h.o.sessionTimeout)
		if err != nil {
			return nil, err
		}
		defer a2.p.stop(30 * time.Second)
		owners = append(owners, a2)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		total, restarted := 0, 0
		for i, m := range owners {
			_, _, n := m.status(ctx)
			total += max(n, 0)
			if i == 0 {
				t.survivorMax = max(t.survivorMax, n)
			} else {
				restarted = n
			}
		}
		if total == int(h.o.parts) && (!static || restarted > 0) {
			t.took = time.Since(killedAt)
			break
		}
		for _, m := range owners {
			if err := m.p.failed(); err != nil {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d partitions owned 3m after the kill", total, h.o.parts)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(statusPoll):
		}
	}
	return t, nil
}

// brokerConfig reads one config of the first broker that answers; "" when
// it cannot.
func (h *harness) brokerConfig(ctx context.Context, name string) string {
	md, err := h.adm.BrokerMetadata(ctx)
	if err != nil || len(md.Brokers) == 0 {
		return ""
	}
	rc, err := h.adm.DescribeBrokerConfigs(ctx, md.Brokers[0].NodeID)
	if err != nil {
		return ""
	}
	for _, r := range rc {
		if r.Err != nil {
			continue
		}
		for _, c := range r.Configs {
			if c.Key == name && c.Value != nil {
				return *c.Value
			}
		}
	}
	return ""
}
