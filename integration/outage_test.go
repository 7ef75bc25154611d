package integration

// The processor through a broker outage, and its hand-over of partitions
// when a member stops or restarts. On every backend the processor runs as
// `productstream process` subprocesses.
//
// The outage test cuts the broker off under load and lets it back: the
// embedded backend is a broker of the test's own, closed and started again
// on its data; an external one is frozen and let go on (pause-broker and
// resume-broker), or with PRODUCTSTREAM_OUTAGE_KIND=stop killed and started
// again on its data (stop-broker and start-broker), with the command
// PRODUCTSTREAM_BROKER_CONTROL names (`realbroker.sh env` prints it).
// PRODUCTSTREAM_OUTAGE sets the outage's length (default 15s; 2m for the
// long run). A single broker killed while it writes a transaction's markers
// can come back with that transaction hanging on a partition, which no
// client can end (see docs/processor.md), so the default is the freeze.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Environment variables of the outage test.
const (
	envBrokerControl = "PRODUCTSTREAM_BROKER_CONTROL" // a shell command that takes stop-broker or start-broker
	envOutage        = "PRODUCTSTREAM_OUTAGE"         // how long the broker stays stopped (default 15s)
	envOutageKind    = "PRODUCTSTREAM_OUTAGE_KIND"    // pause (the default) or stop: how an external broker is cut off
)

// maxResume is how soon processing must resume once the broker answers.
const maxResume = 5 * time.Second

// brokerSwitch stops a backend's broker and starts it again on its data.
type brokerSwitch struct {
	stop, start func(t *testing.T)
}

// switchableBroker returns b, or the broker that stands for it, with the
// switch that stops and starts it; false when b's broker cannot be
// stopped. The embedded broker is replaced by one of the test's own that
// keeps its data in a directory, on a fixed port, with b's registry.
func switchableBroker(t *testing.T, b backend) (backend, *brokerSwitch, bool) {
	t.Helper()
	switch {
	case b.name == "embedded":
		addr := freeAddr(t)
		_, portText, _ := strings.Cut(addr, ":")
		port, _ := strconv.Atoi(portText)
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(t.TempDir())}
		var mu sync.Mutex
		cluster, err := kfake.NewCluster(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			cluster.Close()
		})
		b.brokers = addr
		return b, &brokerSwitch{
			stop: func(*testing.T) {
				mu.Lock()
				defer mu.Unlock()
				cluster.Close()
			},
			start: func(t *testing.T) {
				mu.Lock()
				defer mu.Unlock()
				c, err := kfake.NewCluster(opts...)
				if err != nil {
					t.Fatal(err)
				}
				cluster = c
			},
		}, true
	case os.Getenv(envBrokerControl) != "" && (b.name == "external" || b.name == "secured"):
		run := func(t *testing.T, what string) {
			t.Helper()
			out, err := exec.Command("sh", "-c", os.Getenv(envBrokerControl)+" "+what).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", envBrokerControl, what, err, out)
			}
		}
		off, on := "pause-broker", "resume-broker"
		switch kind := os.Getenv(envOutageKind); kind {
		case "", "pause":
		case "stop":
			off, on = "stop-broker", "start-broker"
		default:
			t.Fatalf("%s=%q: want pause or stop", envOutageKind, kind)
		}
		t.Logf("the broker is cut off with %s and let back with %s", off, on)
		return b, &brokerSwitch{
			stop: func(t *testing.T) {
				t.Cleanup(func() { _ = exec.Command("sh", "-c", os.Getenv(envBrokerControl)+" "+on).Run() }) // never leave it off
				run(t, off)
			},
			start: func(t *testing.T) { run(t, on) },
		}, true
	}
	return b, nil, false
}

// member is one `productstream process` subprocess.
type member struct {
	name   string
	cfg    string
	ops    string // its operations listener
	cmd    *exec.Cmd
	stderr *lockedWriter
	log    *strings.Builder
	done   chan struct{} // closed once it exited
	err    error         // Wait's; read after done
}

// memberConfig writes the config of a processor member named name (its
// processor.instance_id too, when static) of group on b's topics under
// prefix (3 partitions), exactly once unless atLeastOnce.
func memberConfig(t *testing.T, b backend, prefix, group, name string, static, atLeastOnce bool) (cfg, ops string) {
	t.Helper()
	instance := ""
	if static {
		instance = fmt.Sprintf("  instance_id: %q\n", name)
	}
	if atLeastOnce {
		instance += "  exactly_once: false\n"
	}
	return roleConfig(t, b, prefix, name, fmt.Sprintf(`processor:
  group: %q
  quiet_period: 200ms
  max_delay: 2s
%s`, group, instance))
}

// webhookSinkConfig writes the config of a `productstream sink` that
// sends the products topic under prefix to hook.
func webhookSinkConfig(t *testing.T, b backend, prefix string, hook *webhookReceiver) (cfg, ops string) {
	t.Helper()
	return roleConfig(t, b, prefix, "sink", fmt.Sprintf(`sinks:
  - name: partner
    type: webhook
    batch: {linger: 50ms}
    retry: {initial: 100ms, max: 2s}
    webhook: {url: %q, secrets: [%q], allow_private: true}
`, hook.srv.URL+"/catalog", hook.secret))
}

// roleConfig writes the config file name.yaml of a role on b's topics under
// prefix (3 partitions), with an operations listener of its own, and the
// role's own sections (rest) after those; it returns the file and the
// listener's address.
func roleConfig(t *testing.T, b backend, prefix, name, rest string) (cfg, ops string) {
	t.Helper()
	ops = freeAddr(t)
	brokers := `"` + strings.Join(strings.Split(b.brokers, ","), `", "`) + `"`
	cfg = filepath.Join(t.TempDir(), name+".yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`kafka:
  brokers: [%s]
  topic_prefix: %q
  partitions: 3
schema_registry:
  url: %q
ops:
  listen: %q
%s`, brokers, prefix, b.registry, ops, rest)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	secureConfigFile(t, cfg)
	return cfg, ops
}

// startMember runs `productstream process` on cfg. The test's end stops it
// with SIGTERM, and fails when it does not exit cleanly.
func startMember(t *testing.T, name, cfg, ops string) *member {
	t.Helper()
	return startRoleMember(t, "process", name, cfg, ops)
}

// startRoleMember runs `productstream ROLE` on cfg, as startMember does.
func startRoleMember(t *testing.T, role, name, cfg, ops string) *member {
	t.Helper()
	m := &member{name: name, cfg: cfg, ops: ops, log: &strings.Builder{}, done: make(chan struct{})}
	m.stderr = &lockedWriter{w: m.log}
	m.cmd = exec.Command(binary, role, "--config", cfg)
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		if m.exited() {
			return
		}
		m.terminate(t)
		if t.Failed() {
			t.Logf("%s stderr:\n%s", m.name, m.logs())
		}
	})
	return m
}

func (m *member) exited() bool { return closed(m.done) }

func (m *member) logs() string {
	m.stderr.mu.Lock()
	defer m.stderr.mu.Unlock()
	return m.log.String()
}

// terminate sends SIGTERM and expects a clean exit within 30s.
func (m *member) terminate(t *testing.T) {
	t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		if m.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", m.name, m.err)
		}
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		t.Errorf("%s did not stop within 30s of SIGTERM", m.name)
	}
}

// kill sends SIGKILL and waits until it is gone.
func (m *member) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// assigned is how many partitions the member owns, from its metrics; -1
// when they do not answer.
func (m *member) assigned() int {
	return int(m.metric("productstream_processor_assigned_partitions"))
}

// applied is how many changes the member applied, from its metrics; -1
// when they do not answer.
func (m *member) applied() float64 {
	return m.metric(`productstream_processor_changes_total{outcome="applied"}`)
}

// metric is the value of series on the member's /metrics; -1 when it is
// not there.
func (m *member) metric(series string) float64 {
	resp, err := http.Get("http://" + m.ops + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// watchApplied watches the changes the members apply, from now on, and
// returns when they first applied one more than now: when processing
// resumed (zero if it has not).
func watchApplied(members []*member) (resumed func() time.Time) {
	sum := func() float64 {
		n := 0.0
		for _, m := range members {
			n += max(m.applied(), 0)
		}
		return n
	}
	base := sum()
	var (
		mu sync.Mutex
		at time.Time
	)
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if sum() > base {
				mu.Lock()
				at = time.Now()
				mu.Unlock()
				return
			}
		}
	}()
	return func() time.Time {
		close(quit)
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// ready reports the member's /readyz: whether it answered 200, and what it
// said.
func (m *member) ready() (bool, string) {
	resp, err := http.Get("http://" + m.ops + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, body)
}

// changeLoad writes perTick changes every tick to products o0 .. o<n-1> of
// the changes topic, each with its product's next sequence number as its
// price, without waiting for the broker (which keeps them while it is
// stopped), until stop.
type changeLoad struct {
	cl     *kgo.Client
	serde  *schemas.Serde
	issued map[string]int
	quit   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	failed error
}

func startChangeLoad(t *testing.T, b backend, names topics.Names, n, perTick int, tick time.Duration) *changeLoad {
	t.Helper()
	serde := newSerde(t, b.registry)
	if err := serde.Register(context.Background(), names.ByKind()); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(clientOpts(t, b.brokers), kgo.DefaultProduceTopic(names.Changes))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	l := &changeLoad{cl: cl, serde: serde, issued: map[string]int{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		for i := 0; ; {
			select {
			case <-l.quit:
				return
			case <-ticker.C:
			}
			for range perTick {
				id := fmt.Sprintf("o%d", i%n)
				i++
				l.issued[id]++
				seq := l.issued[id]
				ch := schemas.Change{EventID: fmt.Sprintf("%s-%d", id, seq), Source: "outage", Provider: "lisa", Namespace: "ns",
					EventType: "product.updated", Resource: "product", ProductID: id, ReceivedAt: time.Now(),
					Fields: schemas.Fields{Price: new(strconv.Itoa(seq))}, Raw: fmt.Sprintf(`{"productId":%q,"price":"%d"}`, id, seq)}
				v, err := serde.EncodeChange(&ch)
				if err != nil {
					panic(err)
				}
				cl.Produce(context.Background(), &kgo.Record{Key: []byte(ch.Key()), Value: v}, func(_ *kgo.Record, err error) {
					if err != nil {
						l.mu.Lock()
						l.failed = err
						l.mu.Unlock()
					}
				})
			}
		}
	}()
	return l
}

// stop stops the load, waits until the broker has every change, and
// returns how many each product took.
func (l *changeLoad) stop(t *testing.T) map[string]int {
	t.Helper()
	close(l.quit)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.cl.Flush(ctx); err != nil {
		t.Fatalf("the load's changes were not all written: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		t.Fatalf("a change of the load was refused: %v", l.failed)
	}
	return l.issued
}

// coordinatorsAnswer waits until the broker's coordinators of the groups
// and of the transactional ids answer (a broker that starts again loads them
// after it answers anything), and returns when: from then on, the broker
// answers the processor again.
func coordinatorsAnswer(t *testing.T, b backend, groups, txnIDs []string) time.Time {
	t.Helper()
	cl, err := kgo.NewClient(clientOpts(t, b.brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	waitFor(t, "the broker's coordinators to answer", 2*time.Minute, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		described, err := adm.DescribeGroups(ctx, groups...)
		if err == nil {
			err = described.Error()
		}
		if err == nil && len(txnIDs) > 0 {
			var txns kadm.DescribedTransactions
			txns, err = adm.DescribeTransactions(ctx, txnIDs...)
			txns.Each(func(d kadm.DescribedTransaction) {
				if d.Err != nil && err == nil {
					err = fmt.Errorf("transactional id %s: %w", d.TxnID, d.Err)
				}
			})
		}
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return time.Now()
}

// warnings sums up the warnings and errors of a log: each message, with how
// many times it came.
func warnings(log string) string {
	counts := map[string]int{}
	var order []string
	for line := range strings.Lines(log) {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		msg := line
		if i := strings.Index(line, "msg="); i >= 0 {
			msg = line[i:]
			if j := strings.Index(msg, `" `); j >= 0 {
				msg = msg[:j+1]
			}
		}
		if counts[msg] == 0 {
			order = append(order, msg)
		}
		counts[msg]++
	}
	var b strings.Builder
	for _, msg := range order {
		fmt.Fprintf(&b, "  %dx %s\n", counts[msg], strings.TrimSpace(msg))
	}
	return b.String()
}

// productStates reads the products topic: each product's latest state.
func productStates(t *testing.T, b backend, serde *schemas.Serde, names topics.Names) map[string]schemas.State {
	t.Helper()
	out := map[string]schemas.State{}
	for _, r := range readAll(t, b.brokers, names.Products) {
		if r.Value == nil {
			continue
		}
		st, err := serde.DecodeState(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := out[st.ProductID]; !ok || st.Version > prev.Version {
			out[st.ProductID] = st
		}
	}
	return out
}

// The processor rides out a broker outage under load, in both modes: two
// static members of a group per mode, each under 500 changes a second, run
// through the broker's stop and its start on its data; none exits, all say
// they are not ready while it is stopped, and processing resumes within 5 s
// of the broker answering again. At the end every change acknowledged is
// in its product's state once, and in the updates once (at least once: at
// least once): as without the outage.
func TestBackendProcessorRidesOutBrokerOutage(t *testing.T) {
	outage := 15 * time.Second
	if v := os.Getenv(envOutage); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", envOutage, err)
		}
		outage = d
	}
	eachBackend(t, func(t *testing.T, b backend) {
		b, sw, ok := switchableBroker(t, b)
		if !ok {
			t.Skipf("the %s backend's broker cannot be stopped and started here (%s names the command for an external one)", b.name, envBrokerControl)
		}
		// Both modes at once, each with its group, topics and load: one
		// outage for both.
		var runs []*outageRun
		for _, atLeastOnce := range []bool{false, true} {
			runs = append(runs, startOutageRun(t, b, atLeastOnce))
		}
		var members []*member
		var groups, txnIDs []string
		for _, r := range runs {
			members = append(members, r.members...)
			groups = append(groups, r.group)
			if !r.atLeastOnce {
				txnIDs = append(txnIDs, r.group+"-static-outage-a", r.group+"-static-outage-b")
			}
		}
		time.Sleep(3 * time.Second)

		stopped := time.Now()
		sw.stop(t)
		t.Logf("broker stopped (%s)", time.Since(stopped).Round(time.Millisecond))
		for _, m := range members {
			waitFor(t, m.name+" not ready during the outage", 30*time.Second, func() (bool, string) {
				ok, saw := m.ready()
				return !ok && strings.Contains(saw, "kafka unreachable"), saw
			})
			t.Logf("%s not ready %s after the broker was stopped", m.name, time.Since(stopped).Round(time.Millisecond))
		}
		time.Sleep(time.Until(stopped.Add(outage)))
		for _, m := range append(slices.Clone(members), runs[0].sink, runs[1].sink) {
			if m.exited() {
				t.Fatalf("%s exited during the outage: %v\n%s", m.name, m.err, m.logs())
			}
		}
		for _, r := range runs {
			r.resumedAt = watchApplied(r.members)
		}
		sw.start(t)
		started := time.Now()
		back := coordinatorsAnswer(t, b, groups, txnIDs)
		t.Logf("broker started again after %s; its coordinators of the groups and the transactions answer %s later",
			started.Sub(stopped).Round(time.Millisecond), back.Sub(started).Round(time.Millisecond))
		for _, m := range members {
			took := waitFor(t, m.name+" ready again", time.Minute, func() (bool, string) { return m.ready() })
			t.Logf("%s ready %s after the broker answered again", m.name, took.Round(time.Millisecond))
		}
		time.Sleep(3 * time.Second)
		for _, r := range runs {
			t.Run(r.name, func(t *testing.T) { r.check(t, b, outage, back) })
		}
	})
}

// outageRun is one mode's group of two static members, under load, in
// TestBackendProcessorRidesOutBrokerOutage.
type outageRun struct {
	name        string
	atLeastOnce bool
	names       topics.Names
	group       string
	members     []*member
	sink        *member          // a webhook sink of its products topic
	hook        *webhookReceiver // where the sink sends
	load        *changeLoad
	resumedAt   func() time.Time // when its members applied a change after the outage
}

// startOutageRun starts a mode's two members on topics of their own, waits
// until they own the partitions, and starts their load.
func startOutageRun(t *testing.T, b backend, atLeastOnce bool) *outageRun {
	t.Helper()
	r := &outageRun{name: map[bool]string{false: "exactly-once", true: "at-least-once"}[atLeastOnce], atLeastOnce: atLeastOnce}
	prefix := uniquePrefix(t) + r.name + "."
	r.names, r.group = topics.For(prefix), prefix+"processor"
	for _, name := range []string{"outage-a", "outage-b"} {
		cfg, ops := memberConfig(t, b, prefix, r.group, name, true, atLeastOnce)
		r.members = append(r.members, startMember(t, r.name+" "+name, cfg, ops))
	}
	waitFor(t, r.name+": both members to own partitions", 2*time.Minute, func() (bool, string) {
		a, c := r.members[0].assigned(), r.members[1].assigned()
		return a > 0 && c > 0 && a+c == 3, fmt.Sprintf("%d and %d partitions", a, c)
	})
	r.hook = newWebhookReceiver(t)
	cfg, ops := webhookSinkConfig(t, b, prefix, r.hook)
	r.sink = startRoleMember(t, "sink", r.name+" sink", cfg, ops)
	r.load = startChangeLoad(t, b, r.names, 50, 5, 10*time.Millisecond) // 500 changes a second
	return r
}

// check stops the run's load and checks what its members did through the
// outage: neither exited, processing resumed within maxResume of back
// (when the broker answered again), they logged the outage, and every
// change acknowledged is in its product's state once and in the updates
// once (at least once: at least once).
func (r *outageRun) check(t *testing.T, b backend, outage time.Duration, back time.Time) {
	sent := r.load.stop(t)
	resumedApplying := r.resumedAt()
	if resumedApplying.IsZero() {
		t.Fatal("no change was applied after the outage")
	}
	serde := newSerde(t, b.registry)
	var states map[string]schemas.State
	waitFor(t, "every change acknowledged to be in its product's state", 2*time.Minute, func() (bool, string) {
		states = productStates(t, b, serde, r.names)
		for id, n := range sent {
			if st := states[id]; int(st.ChangeCount) != n {
				return false, fmt.Sprintf("%s: %d of %d changes", id, st.ChangeCount, n)
			}
		}
		return true, ""
	})
	for _, m := range r.members {
		if m.exited() {
			t.Fatalf("%s exited: %v\n%s", m.name, m.err, m.logs())
		}
	}
	total, counts, versions := 0, map[string]int{}, map[string]map[int64]bool{}
	var first time.Time
	for _, rec := range readAll(t, b.brokers, r.names.Updates) {
		u, err := serde.DecodeUpdate(context.Background(), rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		counts[u.ProductID] += int(u.ChangeCount)
		if versions[u.ProductID] == nil {
			versions[u.ProductID] = map[int64]bool{}
		}
		if versions[u.ProductID][u.Version] && !r.atLeastOnce {
			t.Errorf("%s: two updates of version %d", u.ProductID, u.Version)
		}
		versions[u.ProductID][u.Version] = true
		if u.EmittedAt.After(back) && (first.IsZero() || u.EmittedAt.Before(first)) {
			first = u.EmittedAt
		}
	}
	for id, n := range sent {
		total += n
		st := states[id]
		if st.Fields.Price == nil || *st.Fields.Price != strconv.Itoa(n) {
			t.Errorf("%s: state price %v, want %d", id, st.Fields.Price, n)
		}
		if counts[id] < n || counts[id] != n && !r.atLeastOnce {
			t.Errorf("%s: the updates count %d changes, want %d", id, counts[id], n)
		}
	}
	if first.IsZero() {
		t.Fatal("no update was written after the broker answered again")
	}
	// Changes applied again tell when processing resumed; the first
	// update after the outage comes up to max_delay (2s) later for a
	// product changed all the time, as these are.
	resumed := max(resumedApplying.Sub(back), 0)
	t.Logf("%s %s: %d changes over %d products; broker stopped %s; processing resumed %s after it answered again, the first update came %s after; updates count %d changes",
		b.name, r.name, total, len(sent), outage, resumed.Round(time.Millisecond), first.Sub(back).Round(time.Millisecond), sum(counts))
	if resumed > maxResume {
		t.Errorf("processing resumed %s after the broker answered again, want within %s", resumed, maxResume)
	}
	r.checkSink(t, states, first)
	for _, m := range r.members {
		out := m.logs()
		if strings.Count(out, "kafka unreachable: processing paused") == 0 || strings.Count(out, "kafka answers again: processing resumed") == 0 {
			t.Errorf("%s did not log the outage's start and end", m.name)
		}
		t.Logf("%s logged:\n%s", m.name, warnings(out))
		m.terminate(t)
	}
}

// checkSink checks that the run's webhook sink rode out the outage too: it
// did not exit, sent each product's final state last, and sent its first
// state after the outage within maxResume of the first update written
// after it (firstUpdate).
func (r *outageRun) checkSink(t *testing.T, states map[string]schemas.State, firstUpdate time.Time) {
	t.Helper()
	var got map[string][]delivery
	waitFor(t, "the sink to send every product's final state", 2*time.Minute, func() (bool, string) {
		if r.sink.exited() {
			t.Fatalf("the sink exited: %v\n%s", r.sink.err, r.sink.logs())
		}
		var refused []string
		got, refused = r.hook.snapshot()
		if len(refused) > 0 {
			t.Fatalf("the receiver refused %d requests: %v", len(refused), refused[0])
		}
		for id, st := range states {
			ds := got["ns:"+id]
			if len(ds) == 0 || ds[len(ds)-1].version != st.Version {
				return false, fmt.Sprintf("%s: %d deliveries, want the last at version %d", id, len(ds), st.Version)
			}
		}
		return true, ""
	})
	var first time.Time
	for _, ds := range got {
		for _, d := range ds {
			if !d.at.Before(firstUpdate) && (first.IsZero() || d.at.Before(first)) {
				first = d.at
			}
		}
	}
	if first.IsZero() {
		t.Fatal("the sink sent nothing after the outage")
	}
	t.Logf("the sink sent its first state after the outage %s after the first update; %d products, each ending at its final version",
		first.Sub(firstUpdate).Round(time.Millisecond), len(got))
	if d := first.Sub(firstUpdate); d > maxResume {
		t.Errorf("the sink resumed %s after the first update after the outage, want within %s", d, maxResume)
	}
	t.Logf("%s logged:\n%s", r.sink.name, warnings(r.sink.logs()))
	r.sink.terminate(t)
}

func sum(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// Static membership and leaving: of two static members, one stopped with
// SIGTERM leaves the group, and the other takes its partitions over at
// once, not after the session timeout (45 s); a static member killed with
// SIGKILL and started again with the same processor.instance_id takes its
// place back at once, with its partitions.
func TestBackendProcessorHandsOverPartitions(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		prefix := uniquePrefix(t)
		group := prefix + "processor"
		cfgA, opsA := memberConfig(t, b, prefix, group, "member-a", true, false)
		cfgB, opsB := memberConfig(t, b, prefix, group, "member-b", true, false)
		a := startMember(t, "member-a", cfgA, opsA)
		waitFor(t, "member-a to own every partition", 2*time.Minute, func() (bool, string) {
			n := a.assigned()
			return n == 3, fmt.Sprintf("%d partitions", n)
		})
		bm := startMember(t, "member-b", cfgB, opsB)
		waitFor(t, "the partitions to be shared", 2*time.Minute, func() (bool, string) {
			x, y := a.assigned(), bm.assigned()
			return x > 0 && y > 0 && x+y == 3, fmt.Sprintf("%d and %d partitions", x, y)
		})

		stopped := time.Now()
		a.terminate(t)
		took := waitFor(t, "member-b to take every partition over after member-a's SIGTERM", 30*time.Second, func() (bool, string) {
			n := bm.assigned()
			return n == 3, fmt.Sprintf("%d partitions", n)
		})
		takeover := time.Since(stopped)
		t.Logf("%s: member-b owned every partition %s after member-a's SIGTERM (%s after it exited)", b.name, takeover.Round(time.Millisecond), took.Round(time.Millisecond))
		if took > maxResume {
			t.Errorf("member-b took the partitions over %s after member-a exited, want within %s", took, maxResume)
		}

		bm.kill()
		bm = startMember(t, "member-b", cfgB, opsB)
		took = waitFor(t, "member-b, restarted after SIGKILL with its instance id, to own its partitions", 40*time.Second, func() (bool, string) {
			n := bm.assigned()
			return n == 3, fmt.Sprintf("%d partitions", n)
		})
		t.Logf("%s: member-b, killed and started again, owned its partitions %s after its start", b.name, took.Round(time.Millisecond))
		if took > 15*time.Second {
			t.Errorf("member-b took its place back %s after its start, want well within the 45s session", took)
		}
	})
}
