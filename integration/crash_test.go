//go:build stress

package integration

// The processor's crash and rebalance tests. They are long, so they run only
// with the stress tag:
//
//	go test -tags stress -count=1 -timeout 30m -run 'Crash|Rebalance' -v ./integration/
//
// They drive the process role alone (no ingest), in each of its modes
// (exactly once, the default, and at least once): a generator in the test
// writes ProductChange records straight to the changes topic while processor
// subprocesses are killed, restarted, added and removed; at the end every
// record of changes, products and updates is read back as a read_committed
// consumer sees it and checked against the processor's guarantees (see
// checkInvariants). Each test logs its generator seed;
// PRODUCTSTREAM_STRESS_SEED replays the same changes (the kill timing stays
// random).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Environment variables that size and steer the stress tests.
const (
	envCrashChanges      = "PRODUCTSTREAM_CRASH_CHANGES"      // changes written (default 100000)
	envCrashProducts     = "PRODUCTSTREAM_CRASH_PRODUCTS"     // products they fall on (default 10000)
	envCrashRate         = "PRODUCTSTREAM_CRASH_RATE"         // changes per second (default 1000)
	envCrashWaitSession  = "PRODUCTSTREAM_CRASH_WAIT_SESSION" // "1": let the broker expire killed members (45 s each)
	envCatchUpChanges    = "PRODUCTSTREAM_CATCHUP_CHANGES"    // default 360000
	envCatchUpProducts   = "PRODUCTSTREAM_CATCHUP_PRODUCTS"   // default 5000
	envCatchUpRounds     = "PRODUCTSTREAM_CATCHUP_ROUNDS"     // bursts, each followed by a kill but the last (default 12)
	envRebalanceChanges  = "PRODUCTSTREAM_REBALANCE_CHANGES"  // default 30000
	envRebalanceProducts = "PRODUCTSTREAM_REBALANCE_PRODUCTS" // default 3000
	envRebalanceRate     = "PRODUCTSTREAM_REBALANCE_RATE"     // default 500
	envStressModes       = "PRODUCTSTREAM_STRESS_MODES"       // processor modes to run: exactly-once,at-least-once (default both)
	envStressSeed        = "PRODUCTSTREAM_STRESS_SEED"        // generator seed (default: random, logged)
	envStressLogDir      = "PRODUCTSTREAM_STRESS_LOG_DIR"     // keep the processors' logs here (default: a temp dir)
)

const (
	stressPartitions = 6
	stressNamespace  = "stress"
	catchUpDeadline  = 3 * time.Minute
)

// The processor killed with SIGKILL at random moments while a generator
// writes changes, and restarted each time: at the end every product's state
// is the expected final one, no acknowledged change is missing, and no key's
// version goes backwards on products or updates.
func TestProcessorCrash(t *testing.T) {
	n := envInt(t, envCrashChanges, 100_000)
	products := envInt(t, envCrashProducts, 10_000)
	rate := envInt(t, envCrashRate, 1000)
	const minKills = 5
	stressRun(t, func(t *testing.T, env *stressEnv, tail *productsTail) (*generator, *expectation) {
		// The processor uses franz-go's default 45 s session timeout and a
		// dynamic member ID, so after a SIGKILL the broker hands the dead
		// member's partitions on only when its session expires. Unless told
		// to wait for that, the test removes the dead member at once, as
		// the broker would 45 s later (a LeaveGroup naming its member ID,
		// what Kafka's admin removeMembersFromConsumerGroup sends), so that
		// many kills fit in one run. (Exactly once, a killed processor's
		// open transaction still stays open until the broker aborts it
		// after the processor's transaction timeout.)
		evict := os.Getenv(envCrashWaitSession) != "1"

		gen := newGenerator(t, n, products, rate)
		proc := env.startProcessor(t)
		gen.launch(env)

		var (
			kills, killsDuringGen int
			restarts              []time.Duration // start to "partitions assigned"
			unexpected            int
		)
		// restartIfExited starts a new processor when proc exited on
		// its own.
		restartIfExited := func() bool {
			if !proc.exited() {
				return false
			}
			unexpected++
			t.Logf("%s exited on its own (%v); restarting it", proc.name, proc.err)
			proc = env.startProcessor(t)
			return true
		}
		for {
			assignedAt, err := proc.waitAssigned(1, 2*time.Minute)
			if err != nil {
				if restartIfExited() {
					continue
				}
				t.Fatalf("%s: %v", proc.name, err)
			}
			restarts = append(restarts, assignedAt.Sub(proc.started))
			if gen.finished() && kills >= minKills {
				break
			}
			select {
			case <-time.After(time.Duration(500+gen.rng.IntN(2500)) * time.Millisecond):
			case <-proc.done:
			}
			if restartIfExited() {
				continue
			}
			proc.kill()
			kills++
			if !gen.finished() {
				killsDuringGen++
			}
			if evict {
				env.evictDeadMembers(t)
			}
			proc = env.startProcessor(t)
		}
		lastStart := proc.started
		genDone := gen.wait(t)

		exp := readChanges(t, env, gen)
		caughtUp, ok := tail.waitConverged(t, exp, catchUpDeadline)
		proc.stop(t)
		tail.stop()

		env.logGenerated(t, gen)
		t.Logf("%s: %d SIGKILLs (%d while the generator ran), %d unexpected exits, dead members evicted: %v; start to partitions assigned: %s",
			env.label(), kills, killsDuringGen, unexpected, evict, durationStats(restarts))
		if ok {
			t.Logf("%s: caught up %s after the last restart, %s after the generator finished",
				env.label(), caughtUp.Sub(lastStart).Round(time.Millisecond), caughtUp.Sub(genDone).Round(time.Millisecond))
		}
		return gen, exp
	})
}

// The processor killed while it catches up on a backlog, round after round:
// the same invariants hold as in TestProcessorCrash. A backlog is what a
// restarted processor meets in production: after a SIGKILL the group waits
// out the dead member's session (45 s by default) while changes keep coming.
// Catching up, the processor holds many keys at once, and at least once its
// commit lags furthest behind what it has written, so a crash replays most.
// Here each round writes a burst while no processor runs, then starts one
// and kills it 0-800 ms after it got its partitions.
func TestProcessorCrashDuringCatchUp(t *testing.T) {
	n := envInt(t, envCatchUpChanges, 360_000)
	products := envInt(t, envCatchUpProducts, 5000)
	rounds := envInt(t, envCatchUpRounds, 12)
	stressRun(t, func(t *testing.T, env *stressEnv, tail *productsTail) (*generator, *expectation) {
		gen := newBurstGenerator(t, n, products, (n+rounds-1)/rounds)
		gen.launch(env)

		var killedAfter []time.Duration
		for range rounds - 1 {
			gen.nextBurst(t)
			proc, at := env.startAssigned(t)
			time.Sleep(time.Until(at.Add(time.Duration(gen.rng.IntN(800)) * time.Millisecond)))
			proc.kill()
			killedAfter = append(killedAfter, time.Since(at))
			env.evictDeadMembers(t)
		}
		gen.nextBurst(t)
		gen.wait(t)
		exp := readChanges(t, env, gen)
		proc := env.startProcessor(t)
		caughtUp, ok := tail.waitConverged(t, exp, catchUpDeadline)
		proc.stop(t)
		tail.stop()

		t.Logf("%s: %d changes over %d products in %d bursts; %d SIGKILLs during catch-up, after partitions assigned: %s",
			env.label(), gen.n, gen.products, rounds, len(killedAfter), durationStats(killedAfter))
		if ok {
			t.Logf("%s: the last processor caught up in %s", env.label(), caughtUp.Sub(proc.started).Round(time.Millisecond))
		}
		return gen, exp
	})
}

// A second processor joins after a third of the changes and leaves
// gracefully (SIGTERM) after two thirds, then a third one joins and is
// killed with SIGKILL near the end, while the first runs throughout: the
// same invariants hold as in TestProcessorCrash.
func TestProcessorRebalance(t *testing.T) {
	n := envInt(t, envRebalanceChanges, 30_000)
	products := envInt(t, envRebalanceProducts, 3000)
	rate := envInt(t, envRebalanceRate, 500)
	stressRun(t, func(t *testing.T, env *stressEnv, tail *productsTail) (*generator, *expectation) {
		gen := newGenerator(t, n, products, rate)

		first, _ := env.startAssigned(t)
		gen.launch(env)

		gen.waitProgress(t, 1.0/3)
		// join starts a processor and logs when it got partitions.
		join := func() *procInstance {
			p, at := env.startAssigned(t)
			t.Logf("%s joined at %.0f%% of the changes and got partitions after %s", p.name, 100*gen.progress(), at.Sub(p.started).Round(time.Millisecond))
			return p
		}
		second := join()

		gen.waitProgress(t, 2.0/3)
		leaving := time.Now()
		second.stop(t)
		t.Logf("%s left (SIGTERM) at %.0f%% of the changes, exited after %s", second.name, 100*gen.progress(), time.Since(leaving).Round(time.Millisecond))

		gen.waitProgress(t, 3.0/4)
		third := join()
		gen.waitProgress(t, 0.9)
		time.Sleep(time.Duration(500+gen.rng.IntN(2500)) * time.Millisecond)
		assignedBefore := first.assignedCount()
		third.kill()
		killed := time.Now()
		t.Logf("%s killed (SIGKILL) at %.0f%% of the changes", third.name, 100*gen.progress())

		gen.wait(t)
		exp := readChanges(t, env, gen)
		caughtUp, ok := tail.waitConverged(t, exp, catchUpDeadline)
		if at, err := first.waitAssigned(assignedBefore+1, time.Second); err == nil {
			t.Logf("%s took over the killed member's partitions %s after the SIGKILL", first.name, at.Sub(killed).Round(time.Millisecond))
		}
		if first.exited() {
			t.Errorf("%s exited during the test: %v", first.name, first.err)
		}
		first.stop(t)
		tail.stop()

		env.logGenerated(t, gen)
		if ok {
			t.Logf("%s: caught up %s after the SIGKILL of %s", env.label(), caughtUp.Sub(killed).Round(time.Millisecond), third.name)
		}
		return gen, exp
	})
}

// ---------------------------------------------------------------- setup

// stressRun runs scenario on each backend in each mode, with a tail of the
// products topic started first. scenario drives the generator and the
// processors, stops the processors and the tail, and returns the generator
// and the changes read back; the processors' warnings are then logged and
// the invariants checked.
func stressRun(t *testing.T, scenario func(t *testing.T, env *stressEnv, tail *productsTail) (*generator, *expectation)) {
	eachBackend(t, func(t *testing.T, b backend) {
		eachMode(t, b, func(t *testing.T, env *stressEnv) {
			tail := startProductsTail(t, env)
			gen, exp := scenario(t, env, tail)
			env.logProcessorWarnings(t)
			checkInvariants(t, env, gen, exp, tail)
		})
	})
}

// stressEnv is one test's topics, config file and processor instances.
type stressEnv struct {
	b           backend
	exactlyOnce bool // the processor's mode
	names       topics.Names
	group       string
	cfg         string
	serde       *schemas.Serde
	logDir      string

	mu    sync.Mutex
	procs []*procInstance
}

// processorMode is one of the processor's delivery modes.
type processorMode struct {
	name        string
	exactlyOnce bool
}

var processorModes = []processorMode{{"exactly-once", true}, {"at-least-once", false}}

// eachMode runs fn with the processor in each mode of this run (all, or
// those named in PRODUCTSTREAM_STRESS_MODES), each on topics of its own.
func eachMode(t *testing.T, b backend, fn func(t *testing.T, env *stressEnv)) {
	want := os.Getenv(envStressModes)
	for _, m := range processorModes {
		if want != "" && !slices.Contains(strings.Split(want, ","), m.name) {
			continue
		}
		t.Run(m.name, func(t *testing.T) { fn(t, newStressEnv(t, b, m.exactlyOnce)) })
	}
}

// label names the backend and mode in logs.
func (env *stressEnv) label() string {
	if env.exactlyOnce {
		return env.b.name + " exactly-once"
	}
	return env.b.name + " at-least-once"
}

// newStressEnv creates the topics (6 partitions) and registers the schemas,
// then writes a process-role config with a 100 ms quiet period.
func newStressEnv(t *testing.T, b backend, exactlyOnce bool) *stressEnv {
	t.Helper()
	prefix := uniquePrefix(t)
	env := &stressEnv{b: b, exactlyOnce: exactlyOnce, names: topics.For(prefix), group: prefix + "processor", serde: newSerde(t, b.registry)}
	env.logDir = t.TempDir()
	if dir := os.Getenv(envStressLogDir); dir != "" {
		env.logDir = filepath.Join(dir, strings.TrimSuffix(prefix, "."))
		if err := os.MkdirAll(env.logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env.cfg = filepath.Join(t.TempDir(), "productstream.yaml")
	brokers := `"` + strings.Join(strings.Split(b.brokers, ","), `", "`) + `"`
	err := os.WriteFile(env.cfg, []byte(fmt.Sprintf(`
kafka:
  brokers: [%s]
  topic_prefix: %q
  partitions: %d
schema_registry:
  url: %q
processor:
  quiet_period: 100ms
  max_delay: 1s
  group: %q
  exactly_once: %t
`, brokers, prefix, stressPartitions, b.registry, env.group, exactlyOnce)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := env.client(t)
	defer cl.Close()
	// Retried as the roles' start-up does: a busy broker may not list a
	// topic it has just created.
	for {
		err := topics.Ensure(ctx, kadm.NewClient(cl), env.names, topics.Spec{Partitions: stressPartitions, ReplicationFactor: -1})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := env.serde.Register(ctx, env.names.ByKind()); err != nil {
		t.Fatal(err)
	}
	t.Logf("topics %s*, group %s, processor logs in %s", prefix, env.group, env.logDir)
	return env
}

func (env *stressEnv) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(env.b.brokers, ",")...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// evictDeadMembers removes every member of the processor group. Call it
// only while no processor runs: then every member left is a killed one.
func (env *stressEnv) evictDeadMembers(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := env.client(t)
	defer cl.Close()
	described, err := kadm.NewClient(cl).DescribeGroups(ctx, env.group)
	if err != nil {
		t.Fatalf("describe %s: %v", env.group, err)
	}
	g := described[env.group]
	if g.Err != nil {
		t.Fatalf("describe %s: %v", env.group, g.Err)
	}
	if len(g.Members) == 0 {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = env.group
	for _, m := range g.Members {
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = m.MemberID
		lm.Reason = kmsg.StringPtr("killed by the crash test")
		req.Members = append(req.Members, lm)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("evict dead members of %s: %v", env.group, err)
	}
	for _, m := range resp.Members {
		if err := kerr.ErrorForCode(m.ErrorCode); err != nil && err != kerr.UnknownMemberID {
			t.Fatalf("evict member %s of %s: %v", m.MemberID, env.group, err)
		}
	}
}

// logProcessorWarnings summarizes the warnings and errors every processor
// instance logged.
func (env *stressEnv) logProcessorWarnings(t *testing.T) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	counts := map[string]int{}
	for _, p := range env.procs {
		for msg, c := range p.log.warnings() {
			counts[msg] += c
		}
	}
	if len(counts) == 0 {
		t.Logf("processors (%d instances) logged no warning or error", len(env.procs))
		return
	}
	msgs := make([]string, 0, len(counts))
	for m, c := range counts {
		msgs = append(msgs, fmt.Sprintf("%dx %s", c, m))
	}
	sort.Strings(msgs)
	t.Logf("processors (%d instances) logged warnings/errors:\n  %s", len(env.procs), strings.Join(msgs, "\n  "))
}

// ---------------------------------------------------------------- processor instances

// procInstance is one `productstream process` subprocess.
type procInstance struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	log     *procLog
	done    chan struct{} // closed once the process has exited
	err     error         // Wait's result; read after done
}

// startAssigned starts a processor and waits until it has partitions,
// returning when it got them.
func (env *stressEnv) startAssigned(t *testing.T) (*procInstance, time.Time) {
	t.Helper()
	p := env.startProcessor(t)
	at, err := p.waitAssigned(1, 2*time.Minute)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return p, at
}

// logGenerated logs what gen produced.
func (env *stressEnv) logGenerated(t *testing.T, gen *generator) {
	t.Helper()
	t.Logf("%s: %d changes over %d products produced in %s (%.0f changes/s), %d acknowledged",
		env.label(), gen.n, gen.products, gen.elapsed().Round(time.Millisecond), float64(gen.n)/gen.elapsed().Seconds(), gen.ackedCount())
}

func (env *stressEnv) startProcessor(t *testing.T) *procInstance {
	t.Helper()
	env.mu.Lock()
	name := fmt.Sprintf("processor-%d", len(env.procs)+1)
	env.mu.Unlock()
	f, err := os.Create(filepath.Join(env.logDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &procInstance{name: name, log: &procLog{file: f}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, "process", "--config", env.cfg)
	p.cmd.Stderr = p.log
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
	})
	env.mu.Lock()
	env.procs = append(env.procs, p)
	env.mu.Unlock()
	return p
}

func (p *procInstance) exited() bool { return closed(p.done) }

// kill sends SIGKILL and waits for the process to be gone.
func (p *procInstance) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and expects a clean exit within 30 s.
func (p *procInstance) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v (log %s)", p.name, p.err, p.log.file.Name())
		}
	case <-time.After(30 * time.Second):
		p.kill()
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

func (p *procInstance) assignedCount() int { return int(p.log.assigned.Load()) }

// waitAssigned waits until the processor has logged "partitions assigned"
// (after restoring their state) n times in all, and returns when.
func (p *procInstance) waitAssigned(n int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if p.assignedCount() >= n {
			return p.log.lastAssigned(), nil
		}
		if p.exited() {
			return time.Time{}, fmt.Errorf("exited before partitions were assigned: %v", p.err)
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no partitions assigned within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procLog writes a processor's stderr to a file and watches its lines.
type procLog struct {
	file     *os.File
	assigned atomic.Int32

	mu         sync.Mutex
	partial    []byte
	assignedAt time.Time
	warns      map[string]int // msg of WARN and ERROR lines -> count
}

func (l *procLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	for {
		i := slices.Index(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return l.file.Write(b)
}

func (l *procLog) line(s string) {
	if strings.Contains(s, `msg="partitions assigned"`) {
		l.assignedAt = time.Now()
		l.assigned.Add(1)
	}
	if strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
		msg := s
		if i := strings.Index(s, "msg="); i >= 0 {
			msg = s[i:]
			if j := strings.Index(msg, `" `); j >= 0 {
				msg = msg[:j+1]
			}
		}
		if l.warns == nil {
			l.warns = map[string]int{}
		}
		l.warns[msg]++
	}
}

func (l *procLog) lastAssigned() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.assignedAt
}

func (l *procLog) warnings() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.warns)
}

// ---------------------------------------------------------------- generator

// generator writes n changes over a set of products to the changes topic,
// at a steady rate or in bursts. Each change of product i carries the
// product's next sequence number (1, 2, ...) as its price and in its raw
// JSON. A fifth of the changes fall on 20 hot products, so that coalescing
// and the max delay are exercised too; 1.5% fall on 30 flapping products, a
// third of whose changes are deletes; of the others 0.5% are deletes, about
// 1% in all.
type generator struct {
	n, products int
	rate        int // changes per second; 0: in bursts
	burst       int // changes per burst, each written at full speed when nextBurst asks
	seed        uint64
	rng         *rand.Rand // used by the test goroutine only (killer timing)
	next        chan struct{}
	burstDone   chan struct{}
	quit        chan struct{} // closed when the test ends
	started     atomic.Bool

	sent  []genChange // written before the record is produced
	count atomic.Int64

	mu      sync.Mutex
	acked   []bool
	failed  int
	lastErr error

	start, end time.Time
	done       chan struct{}
	err        error
}

type genChange struct {
	product int
	seq     int
	deleted bool
}

// newGenerator returns a generator that writes at rate changes per second.
func newGenerator(t *testing.T, n, products, rate int) *generator {
	t.Helper()
	g := newGen(t, n, products)
	g.rate = rate
	t.Logf("generator: %d changes over %d products at %d/s, seed %d (%s)", n, products, rate, g.seed, envStressSeed)
	return g
}

// newBurstGenerator returns a generator that writes burst changes at a time,
// as fast as the broker takes them, each time nextBurst asks.
func newBurstGenerator(t *testing.T, n, products, burst int) *generator {
	t.Helper()
	g := newGen(t, n, products)
	g.burst = burst
	t.Logf("generator: %d changes over %d products in bursts of %d, seed %d (%s)", n, products, burst, g.seed, envStressSeed)
	return g
}

func newGen(t *testing.T, n, products int) *generator {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv(envStressSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", envStressSeed, err)
		}
		seed = v
	}
	g := &generator{
		n: n, products: products, seed: seed,
		rng:       rand.New(rand.NewPCG(seed, 1)),
		next:      make(chan struct{}),
		burstDone: make(chan struct{}),
		quit:      make(chan struct{}),
		sent:      make([]genChange, n),
		acked:     make([]bool, n),
		done:      make(chan struct{}),
	}
	t.Cleanup(func() {
		close(g.quit)
		if g.started.Load() {
			<-g.done
		}
	})
	return g
}

var errGeneratorStopped = errors.New("generator stopped: the test ended")

func productID(i int) string { return "p" + strconv.Itoa(i) }

// launch runs the generator in its own goroutine.
func (g *generator) launch(env *stressEnv) {
	g.started.Store(true)
	go g.run(env)
}

// run produces every change, then flushes. Its error is reported by wait.
func (g *generator) run(env *stressEnv) {
	defer close(g.done)
	rng := rand.New(rand.NewPCG(g.seed, 2))
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(env.b.brokers, ",")...),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent: franz-go's default with acks=all
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		g.err = err
		return
	}
	defer cl.Close()
	ctx := context.Background()
	seqs := make([]int, g.products)
	hot := min(20, g.products)          // products [0, hot) get a fifth of the changes
	flapping := min(hot+30, g.products) // products [hot, flapping) are deleted and recreated often
	g.start = time.Now()
	for i := 0; i < g.n; {
		var target int
		if g.burst > 0 {
			select {
			case <-g.next:
			case <-g.quit:
				g.err = errGeneratorStopped
				return
			}
			target = min(g.n, i+g.burst)
		} else {
			target = min(g.n, int(float64(g.rate)*time.Since(g.start).Seconds())+1)
		}
		for ; i < target; i++ {
			p, deleted := rng.IntN(g.products), rng.IntN(200) == 0
			switch r := rng.IntN(1000); {
			case r < 200:
				p = rng.IntN(hot)
			case r < 215 && flapping > hot:
				p, deleted = hot+rng.IntN(flapping-hot), rng.IntN(3) == 0
			}
			seqs[p]++
			c := genChange{product: p, seq: seqs[p], deleted: deleted}
			g.sent[i] = c
			v, err := env.serde.EncodeChange(c.change())
			if err != nil {
				g.err = err
				return
			}
			idx := i
			cl.Produce(ctx, &kgo.Record{Topic: env.names.Changes, Key: []byte(schemas.Key(stressNamespace, productID(p))), Value: v},
				func(_ *kgo.Record, err error) {
					g.mu.Lock()
					defer g.mu.Unlock()
					if err != nil {
						g.failed++
						g.lastErr = err
						return
					}
					g.acked[idx] = true
				})
			g.count.Store(int64(i + 1))
		}
		if g.burst == 0 {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-g.quit:
				g.err = errGeneratorStopped
				return
			}
			continue
		}
		if err := cl.Flush(ctx); err != nil {
			g.err = err
			return
		}
		if i < g.n {
			select {
			case g.burstDone <- struct{}{}:
			case <-g.quit:
				g.err = errGeneratorStopped
				return
			}
		}
	}
	if err := cl.Flush(ctx); err != nil {
		g.err = err
	}
	g.end = time.Now()
}

// change is the ProductChange of c.
func (c genChange) change() *schemas.Change {
	ch := &schemas.Change{
		EventID: fmt.Sprintf("stress-%d-%d", c.product, c.seq), Source: "stress", Provider: "test",
		Namespace: stressNamespace, EventType: "product.updated", Resource: "product", ProductID: productID(c.product),
		Deleted: c.deleted, ReceivedAt: time.Now(), Raw: fmt.Sprintf(`{"seq":%d,"r%d":%d}`, c.seq, c.seq%3, c.seq),
	}
	price := strconv.Itoa(c.seq)
	ch.Fields.Price = &price
	if c.deleted {
		ch.EventType = "product.deleted"
	} else if c.seq%4 == 0 {
		title := "title " + price
		ch.Fields.Title = &title
	}
	return ch
}

func (g *generator) progress() float64 { return float64(g.count.Load()) / float64(g.n) }

func (g *generator) finished() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// nextBurst has the next burst written and waits until it is flushed (the
// last one: until the generator is done).
func (g *generator) nextBurst(t *testing.T) {
	t.Helper()
	select {
	case g.next <- struct{}{}:
	case <-g.done:
		t.Fatalf("generator ended early: %v", g.err)
	}
	select {
	case <-g.burstDone:
	case <-g.done:
		if g.err != nil {
			t.Fatalf("generator: %v", g.err)
		}
	}
}

// waitProgress waits until the given fraction of the changes is produced.
func (g *generator) waitProgress(t *testing.T, frac float64) {
	t.Helper()
	for g.progress() < frac && !g.finished() {
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the generator to finish and returns when it did.
func (g *generator) wait(t *testing.T) time.Time {
	t.Helper()
	<-g.done
	if g.err != nil {
		t.Fatalf("generator: %v", g.err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed > 0 {
		t.Logf("generator: %d changes not acknowledged, last error: %v", g.failed, g.lastErr)
	}
	return g.end
}

func (g *generator) elapsed() time.Duration { return g.end.Sub(g.start) }

func (g *generator) ackedCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, a := range g.acked {
		if a {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------- reading back

// changeObs is one record of the changes topic.
type changeObs struct {
	offset  int64
	seq     int
	deleted bool
	title   *string
	eventID string
}

// expectation is what the changes topic says each key must end as.
type expectation struct {
	perKey  map[string][]changeObs // in log order
	total   int
	byIndex map[[2]int]bool // {product, seq} present on the topic
}

// final is the expected last state of key.
type final struct {
	offset      int64
	seq         int
	deleted     bool
	title       *string
	changeCount int64 // changes applied since the last delete
	eventID     string
	deletes     []int64 // offsets of every delete of the key, ascending
}

func (e *expectation) final(key string) final {
	var f final
	for _, c := range e.perKey[key] {
		f.offset, f.seq, f.deleted, f.eventID = c.offset, c.seq, c.deleted, c.eventID
		if c.deleted {
			f.deletes = append(f.deletes, c.offset)
			f.title, f.changeCount = nil, 0
			continue
		}
		f.changeCount++
		if c.title != nil {
			f.title = c.title
		}
	}
	return f
}

// readChanges reads the whole changes topic once the generator is done.
func readChanges(t *testing.T, env *stressEnv, gen *generator) *expectation {
	t.Helper()
	ctx := context.Background()
	exp := &expectation{perKey: map[string][]changeObs{}, byIndex: map[[2]int]bool{}}
	for _, r := range readAll(t, env.b.brokers, env.names.Changes) {
		ch, err := env.serde.DecodeChange(ctx, r.Value)
		if err != nil {
			t.Fatalf("changes offset %d/%d: %v", r.Partition, r.Offset, err)
		}
		p, err := strconv.Atoi(strings.TrimPrefix(ch.ProductID, "p"))
		if err != nil || ch.Fields.Price == nil {
			t.Fatalf("changes offset %d/%d: not written by the generator: %+v", r.Partition, r.Offset, ch)
		}
		seq, _ := strconv.Atoi(*ch.Fields.Price)
		if rawSeq(ch.Raw) != seq {
			t.Fatalf("changes offset %d/%d: raw %s does not carry seq %d", r.Partition, r.Offset, ch.Raw, seq)
		}
		key := string(r.Key)
		exp.perKey[key] = append(exp.perKey[key], changeObs{offset: r.Offset, seq: seq, deleted: ch.Deleted, title: ch.Fields.Title, eventID: ch.EventID})
		exp.byIndex[[2]int{p, seq}] = true
		exp.total++
	}
	for key, cs := range exp.perKey {
		sort.Slice(cs, func(i, j int) bool { return cs[i].offset < cs[j].offset })
		for i := 1; i < len(cs); i++ {
			if cs[i].seq <= cs[i-1].seq {
				t.Fatalf("test precondition: %s's changes are not in sequence order on %s: seq %d at offset %d after seq %d at offset %d",
					key, env.names.Changes, cs[i].seq, cs[i].offset, cs[i-1].seq, cs[i-1].offset)
			}
		}
	}
	return exp
}

func rawSeq(raw string) int {
	var v struct {
		Seq int `json:"seq"`
	}
	if json.Unmarshal([]byte(raw), &v) != nil {
		return -1
	}
	return v.Seq
}

// stateObs is one record of the products topic: a state or a tombstone.
type stateObs struct {
	partition int32
	offset    int64
	tomb      bool
	version   int64
}

// productsTail follows the products topic from the start for the whole
// test, as a read_committed consumer, so that it sees (nearly) every state
// the processor committed even where the broker compacts the topic meanwhile
// (the embedded broker compacts all but the last batch every 500 ms).
type productsTail struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	seen   map[string][]stateObs
	latest map[string]stateObs
	err    error
}

func startProductsTail(t *testing.T, env *stressEnv) *productsTail {
	t.Helper()
	cl := env.client(t, kgo.ConsumeTopics(env.names.Products), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithCancel(context.Background())
	pt := &productsTail{cancel: cancel, done: make(chan struct{}), seen: map[string][]stateObs{}, latest: map[string]stateObs{}}
	serde := newSerde(t, env.b.registry)
	go func() {
		defer close(pt.done)
		defer cl.Close()
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				o := stateObs{partition: r.Partition, offset: r.Offset, tomb: r.Value == nil}
				if !o.tomb {
					st, err := serde.DecodeState(ctx, r.Value)
					if err != nil {
						pt.mu.Lock()
						pt.err = fmt.Errorf("products %d/%d: %w", r.Partition, r.Offset, err)
						pt.mu.Unlock()
						return
					}
					o.version = st.Version
				}
				pt.mu.Lock()
				pt.seen[string(r.Key)] = append(pt.seen[string(r.Key)], o)
				pt.latest[string(r.Key)] = o
				pt.mu.Unlock()
			})
		}
	}()
	t.Cleanup(pt.stop)
	return pt
}

func (pt *productsTail) stop() {
	pt.cancel()
	<-pt.done
}

// waitConverged waits until the latest record of every key on products
// reflects the key's last change, and returns when it did. When that does
// not happen in time it fails the test but returns, so that the invariant
// check still says what is wrong.
func (pt *productsTail) waitConverged(t *testing.T, exp *expectation, timeout time.Duration) (time.Time, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var behind []string
		pt.mu.Lock()
		if pt.err != nil {
			t.Fatal(pt.err)
		}
		for key := range exp.perKey {
			f := exp.final(key)
			o, ok := pt.latest[key]
			switch {
			case f.deleted && (!ok || o.tomb):
			case !f.deleted && ok && !o.tomb && o.version == f.offset:
			default:
				behind = append(behind, fmt.Sprintf("%s(latest %+v, present %v; last change offset %d deleted %v)", key, o, ok, f.offset, f.deleted))
			}
		}
		pt.mu.Unlock()
		if len(behind) == 0 {
			return time.Now(), true
		}
		if time.Now().After(deadline) {
			sort.Strings(behind)
			t.Errorf("products did not catch up within %s: %d keys behind, e.g. %s", timeout, len(behind), strings.Join(behind[:min(5, len(behind))], ", "))
			return time.Now(), false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitTransactionsSettled waits until no transaction is open on products
// and updates (their last stable offsets reach their ends): a killed
// processor's transaction stays open until the broker aborts it after the
// transaction timeout.
func (env *stressEnv) waitTransactionsSettled(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := env.client(t)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	start := time.Now()
	for {
		ends, err := adm.ListEndOffsets(ctx, env.names.Products, env.names.Updates)
		if err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, env.names.Products, env.names.Updates)
		if err != nil {
			t.Fatal(err)
		}
		var open []string
		ends.Each(func(o kadm.ListedOffset) {
			if s, ok := stable.Lookup(o.Topic, o.Partition); !ok || s.Offset != o.Offset {
				open = append(open, fmt.Sprintf("%s/%d (stable %d, end %d)", o.Topic, o.Partition, s.Offset, o.Offset))
			}
		})
		if len(open) == 0 {
			if d := time.Since(start); d > time.Second {
				t.Logf("%s: open transactions on the outputs were settled after another %s", env.label(), d.Round(time.Millisecond))
			}
			return
		}
		if ctx.Err() != nil {
			t.Errorf("transactions still open on %s", strings.Join(open, ", "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- invariants

// updateObs is one record of the updates topic.
type updateObs struct {
	partition int32
	offset    int64
	version   int64
	deleted   bool
	count     int32
	price     string
}

// violations collects invariant violations with the keys involved.
type violations struct {
	msgs  []string
	keys  map[string]bool
	kinds map[string]int // format -> count
}

func (v *violations) add(key, format string, args ...any) {
	v.msgs = append(v.msgs, key+": "+fmt.Sprintf(format, args...))
	if v.keys == nil {
		v.keys, v.kinds = map[string]bool{}, map[string]int{}
	}
	v.keys[key] = true
	v.kinds[format]++
}

// checkInvariants reads changes, products and updates back and checks:
//
//  1. every acknowledged change is on changes;
//  2. every key's latest record on products is its expected final state:
//     a tombstone (or nothing) when its last change is a delete, else the
//     price, title, raw JSON, change count and event ID of its changes since
//     the last delete, with version = the offset of its last change;
//  3. per key, in log order, the version never decreases on products (both
//     as the test saw it live and as it is at the end) nor on updates; a
//     tombstone stands for the first delete of the key at or after the
//     preceding version;
//  4. updates are at least once (exactly once in that mode): per key and in
//     all, their change counts add up to at least (exactly) the number of
//     changes, and each key's last update carries its last change.
func checkInvariants(t *testing.T, env *stressEnv, gen *generator, exp *expectation, tail *productsTail) {
	t.Helper()
	ctx := context.Background()
	var v violations

	// (1) Nothing acknowledged is missing.
	gen.mu.Lock()
	missing, unackedPresent := 0, 0
	for i, c := range gen.sent {
		present := exp.byIndex[[2]int{c.product, c.seq}]
		switch {
		case gen.acked[i] && !present:
			missing++
			v.add(schemas.Key(stressNamespace, productID(c.product)), "acknowledged change seq %d is not on %s", c.seq, env.names.Changes)
		case !gen.acked[i] && present:
			unackedPresent++
		}
	}
	gen.mu.Unlock()
	if want := gen.ackedCount() - missing + unackedPresent; exp.total != want {
		t.Errorf("%s holds %d changes, want %d: records the generator did not write", env.names.Changes, exp.total, want)
	}

	// (2) The final state of every key, as read_committed consumers see it
	// once the transactions of killed processors are aborted.
	env.waitTransactionsSettled(t)
	productRecs := readAll(t, env.b.brokers, env.names.Products)
	finalObs := map[string][]stateObs{}
	latestRec := map[string]*kgo.Record{}
	for _, r := range productRecs {
		o := stateObs{partition: r.Partition, offset: r.Offset, tomb: r.Value == nil}
		if !o.tomb {
			st, err := env.serde.DecodeState(ctx, r.Value)
			if err != nil {
				t.Fatalf("products %d/%d: %v", r.Partition, r.Offset, err)
			}
			o.version = st.Version
		}
		finalObs[string(r.Key)] = append(finalObs[string(r.Key)], o)
		latestRec[string(r.Key)] = r
	}
	for key := range latestRec {
		if _, ok := exp.perKey[key]; !ok {
			v.add(key, "on %s but has no change", env.names.Products)
		}
	}
	live, deleted := 0, 0
	for key := range exp.perKey {
		f := exp.final(key)
		r := latestRec[key]
		if f.deleted {
			deleted++
			if r != nil && r.Value != nil {
				st, _ := env.serde.DecodeState(ctx, r.Value)
				v.add(key, "last change (offset %d) is a delete, but the latest state is live with version %d", f.offset, st.Version)
			}
			continue
		}
		live++
		if r == nil || r.Value == nil {
			v.add(key, "no live state on %s; last change offset %d seq %d", env.names.Products, f.offset, f.seq)
			continue
		}
		st, err := env.serde.DecodeState(ctx, r.Value)
		if err != nil {
			t.Fatalf("products %s: %v", key, err)
		}
		want := strconv.Itoa(f.seq)
		switch {
		case st.Version != f.offset:
			v.add(key, "latest state has version %d, its last change is at offset %d", st.Version, f.offset)
		case st.Fields.Price == nil || *st.Fields.Price != want:
			v.add(key, "latest state has price %v, want %s", ptrString(st.Fields.Price), want)
		case ptrString(st.Fields.Title) != ptrString(f.title):
			v.add(key, "latest state has title %s, want %s", ptrString(st.Fields.Title), ptrString(f.title))
		case rawSeq(st.Raw) != f.seq:
			v.add(key, "latest state has raw %s, want seq %d", st.Raw, f.seq)
		case st.ChangeCount != f.changeCount:
			v.add(key, "latest state has change_count %d, want %d (changes since the last delete: none applied twice, none skipped)", st.ChangeCount, f.changeCount)
		case st.LastEventID != f.eventID:
			v.add(key, "latest state has last_event_id %s, want %s", st.LastEventID, f.eventID)
		case st.Namespace != stressNamespace || st.Key() != key:
			v.add(key, "latest state is keyed %s", st.Key())
		}
	}

	// (3) Versions never go backwards: products as seen live and at the end.
	tail.mu.Lock()
	liveObs := tail.seen
	tail.mu.Unlock()
	seenLive := 0
	for key, obs := range liveObs {
		seenLive += len(obs)
		checkStateVersions(&v, key, "live", obs, exp.final(key).deletes)
	}
	for key, obs := range finalObs {
		checkStateVersions(&v, key, "at the end", obs, exp.final(key).deletes)
	}

	// (3) and (4) on updates.
	updates := map[string][]updateObs{}
	var counted int64
	for _, r := range readAll(t, env.b.brokers, env.names.Updates) {
		u, err := env.serde.DecodeUpdate(ctx, r.Value)
		if err != nil {
			t.Fatalf("updates %d/%d: %v", r.Partition, r.Offset, err)
		}
		o := updateObs{partition: r.Partition, offset: r.Offset, version: u.Version, deleted: u.Deleted, count: u.ChangeCount}
		if u.State != nil && u.State.Fields.Price != nil {
			o.price = *u.State.Fields.Price
		}
		if u.Key() != string(r.Key) {
			v.add(string(r.Key), "update at %d/%d is for %s", r.Partition, r.Offset, u.Key())
		}
		updates[string(r.Key)] = append(updates[string(r.Key)], o)
		counted += int64(u.ChangeCount)
	}
	for key, us := range updates {
		for i := 1; i < len(us); i++ {
			if us[i].version < us[i-1].version {
				v.add(key, "version goes backwards on updates: %d at offset %d after %d at offset %d", us[i].version, us[i].offset, us[i-1].version, us[i-1].offset)
			}
		}
	}
	for key, cs := range exp.perKey {
		us := updates[key]
		var sum int
		for _, u := range us {
			sum += int(u.count)
		}
		switch {
		case sum < len(cs):
			v.add(key, "updates count %d changes, the key has %d", sum, len(cs))
		case sum > len(cs) && env.exactlyOnce:
			v.add(key, "updates count %d changes, the key has %d: exactly once, none may repeat", sum, len(cs))
		}
		f := exp.final(key)
		if len(us) == 0 {
			v.add(key, "no update at all")
			continue
		}
		last := us[len(us)-1]
		if last.version != f.offset || last.deleted != f.deleted || (!f.deleted && last.price != strconv.Itoa(f.seq)) {
			v.add(key, "last update has version %d deleted %v price %q; last change is at offset %d deleted %v seq %d",
				last.version, last.deleted, last.price, f.offset, f.deleted, f.seq)
		}
	}
	if counted < int64(exp.total) || (env.exactlyOnce && counted != int64(exp.total)) {
		t.Errorf("updates stand for %d changes in all, %s holds %d", counted, env.names.Changes, exp.total)
	}

	t.Logf("checked %d changes (%d acknowledged, %d not acknowledged but written), %d keys (%d live, %d deleted at the end); %d records on %s at the end, %d seen live; %d updates standing for %d changes: %d more than written (%.2f%% replayed)",
		exp.total, gen.ackedCount(), unackedPresent, len(exp.perKey), live, deleted, len(productRecs), env.names.Products, seenLive,
		countUpdates(updates), counted, counted-int64(exp.total), 100*float64(counted-int64(exp.total))/float64(max(1, exp.total)))

	if len(v.msgs) > 0 {
		sort.Strings(v.msgs)
		kinds := make([]string, 0, len(v.kinds))
		for k, c := range v.kinds {
			kinds = append(kinds, fmt.Sprintf("%6d× %s", c, k))
		}
		sort.Sort(sort.Reverse(sort.StringSlice(kinds)))
		t.Errorf("%d invariant violations on %d keys, by kind:\n  %s\nfirst ones:\n  %s", len(v.msgs), len(v.keys),
			strings.Join(kinds, "\n  "), strings.Join(v.msgs[:min(30, len(v.msgs))], "\n  "))
		keys := make([]string, 0, len(v.keys))
		for k := range v.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, key := range keys[:min(5, len(keys))] {
			t.Logf("history of %s:\n%s", key, keyHistory(key, exp.perKey[key], liveObs[key], finalObs[key], updates[key]))
		}
	}
}

// checkStateVersions checks that the versions of one key's products records
// never decrease in log order. A tombstone carries no version: it stands for
// the first delete of the key at or after the version before it.
func checkStateVersions(v *violations, key, when string, obs []stateObs, deletes []int64) {
	floor := int64(-1)
	for _, o := range obs {
		if o.tomb {
			i := sort.Search(len(deletes), func(i int) bool { return deletes[i] >= floor })
			if i == len(deletes) {
				v.add(key, "products (%s): tombstone at offset %d with no delete at or after version %d", when, o.offset, floor)
				continue
			}
			floor = deletes[i]
			continue
		}
		if o.version < floor {
			v.add(key, "products (%s): version %d at offset %d after version %d (a state or a delete's tombstone) before it", when, o.version, o.offset, floor)
		}
		floor = max(floor, o.version)
	}
}

func keyHistory(key string, cs []changeObs, liveObs, finalObs []stateObs, us []updateObs) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  changes:")
	for _, c := range cs {
		fmt.Fprintf(&b, " %d:seq%d", c.offset, c.seq)
		if c.deleted {
			b.WriteString("(delete)")
		}
	}
	for _, s := range []struct {
		name string
		obs  []stateObs
	}{{"products seen live", liveObs}, {"products at the end", finalObs}} {
		fmt.Fprintf(&b, "\n  %s:", s.name)
		for _, o := range s.obs {
			if o.tomb {
				fmt.Fprintf(&b, " %d:tombstone", o.offset)
			} else {
				fmt.Fprintf(&b, " %d:v%d", o.offset, o.version)
			}
		}
	}
	fmt.Fprintf(&b, "\n  updates:")
	for _, u := range us {
		fmt.Fprintf(&b, " %d:v%d×%d", u.offset, u.version, u.count)
		if u.deleted {
			b.WriteString("(delete)")
		}
	}
	return b.String()
}

func countUpdates(us map[string][]updateObs) int {
	n := 0
	for _, u := range us {
		n += len(u)
	}
	return n
}

func ptrString(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return strconv.Quote(*s)
}

// ---------------------------------------------------------------- small helpers

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// durationStats summarizes ds as min/median/max.
func durationStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("min %s, median %s, max %s over %d starts", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]), len(s))
}
