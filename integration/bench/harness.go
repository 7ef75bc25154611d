package main

// The run: build the binary, measure the three HTTP servers, then the
// processor side, then write the results file.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/productstream/productstream/loopback"
	"github.com/productstream/productstream/schemas"
)

// harness holds what every phase of one run shares.
type harness struct {
	o      *options
	log    *slog.Logger
	runID  string // prefix of every topic, group and subject of the run
	root   string // the module root (go.mod's directory)
	work   string // binary, configs and process logs
	bin    string // the productstream binary
	cl     *kgo.Client
	adm    *kadm.Client
	serde  *schemas.Serde
	reg    *sr.Client
	rb     realBroker     // kafkaPID 0: unknown
	rbNote string         // why Kafka's CPU is not measured, when it is not
	ports  loopback.Ports // the listen addresses of the processes it starts
}

// results is everything one run measured; report.go renders it.
type results struct {
	o        *options
	runID    string
	started  time.Time
	elapsed  time.Duration
	machine  [][2]string
	kafkaCPU bool // Kafka's JVM CPU was measured
	rbNote   string

	closed   map[string]*loadResult // by server: B1, B2, edge; 1 KB closed loop
	open     map[string]*loadResult // 1 KB open loop at openRate
	mixed    map[string]*loadResult // mixed bodies, closed loop
	openRate float64

	input     *procInput
	b3        *procResult
	alo, eos  *procResult
	restoreIn *restoreInput // the products topic the restore and B3's consumer read
	restore   *restoreResult
	b3consume *childResult
	fresh     *freshResult
	coalescer *coalescerResult // nil: not measured (-coalescer-memory=false)
	profiles  []*profileResult // CPU profiles of extra processor runs (-profile)
	// CPU profiles of B2 and the edge in an extra closed-loop phase each
	// (-profile).
	ingestProfiles []*profileResult

	sinkIn    *sinkInput             // the products topic the sinks read
	sinks     []*sinkResult          // by kind, in the order measured
	backends  map[string]backendInfo // by kind (opensearch always, for the freshness run)
	sinkFresh []*sinkFreshResult     // by rate, in the order of -sink-fresh-rates
	sinkLoad  [2]string              // the load average before and after the sinks' throughput runs
	startup   *startupResult
	security  string // how the connections are secured
}

// Server names, in the order they are measured and reported.
const (
	srvB1   = "B1"
	srvB2   = "B2"
	srvEdge = "edge"
)

var servers = []string{srvB1, srvB2, srvEdge}

// run performs one whole benchmark run and writes the results file.
func run(ctx context.Context, o *options, log *slog.Logger) (*results, error) {
	h, err := newHarness(ctx, o, log)
	if err != nil {
		return nil, err
	}
	res, err := h.run(ctx)
	h.close(err == nil)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.out, []byte(renderMarkdown(res)), 0o644); err != nil {
		return nil, fmt.Errorf("write results: %w", err)
	}
	return res, nil
}

func newHarness(ctx context.Context, o *options, log *slog.Logger) (*harness, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	if o.out == "" {
		o.out = filepath.Join(root, "integration", "bench", "RESULTS.md")
	}
	var id [3]byte
	_, _ = rand.Read(id[:])
	h := &harness{o: o, log: log, root: root, runID: "bench-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(id[:])}
	if h.work = o.workDir; h.work == "" {
		if h.work, err = os.MkdirTemp("", "productstream-bench-"); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	} else if err := os.MkdirAll(h.work, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	if h.bin = o.bin; h.bin == "" {
		h.bin = filepath.Join(h.work, "productstream")
		log.Info("building productstream", "bin", h.bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", h.bin, "./cmd/productstream")
		build.Dir = h.root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/productstream: %w\n%s", err, out)
		}
	}
	if h.cl, err = kgo.NewClient(o.svc.opts()...); err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	h.adm = kadm.NewClient(h.cl)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.cl.Ping(pctx); err != nil {
		h.cl.Close()
		return nil, fmt.Errorf("kafka at %v: %w", o.brokers, err)
	}
	reg, err := o.svc.newRegistry()
	if err != nil {
		h.cl.Close()
		return nil, fmt.Errorf("registry client: %w", err)
	}
	h.reg, h.serde = reg, schemas.NewSerde(reg)
	if h.rb, err = findRealBroker(o.brokerDir, o.brokers); err != nil {
		h.rbNote = err.Error()
		log.Warn("Kafka's CPU will not be measured", "why", err)
	}
	return h, nil
}

// moduleRoot is the directory of the productstream go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the harness inside the productstream module")
	}
	return filepath.Dir(mod), nil
}

// coalescerTest is the processor test that measures the coalescer's memory.
const coalescerTest = "TestCoalescerMemoryPerPendingKey"

// coalescerResult is the coalescer's heap per pending key, as the processor
// test measured it; err says why not, when it could not be measured.
type coalescerResult struct {
	bytes float64
	err   string
}

// measureCoalescerMemory runs the processor's coalescer memory test in the
// module at root and reads its figure. It never fails the run: a failed
// `go test` or a missing line is reported in err.
func measureCoalescerMemory(ctx context.Context, root string) *coalescerResult {
	const limit = 10 * time.Minute
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^"+coalescerTest+"$", "-count=1", "-v", "./processor/")
	cmd.Dir = root
	// Its own process group, so that a cancel also ends the test binary
	// `go test` started, not only `go` itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &coalescerResult{err: "go test took longer than " + limit.String()}
	case ctx.Err() != nil:
		return &coalescerResult{err: "go test: " + ctx.Err().Error()}
	}
	if err != nil {
		return &coalescerResult{err: goTestFailure(err, string(out))}
	}
	n, err := parseCoalescerMemory(string(out))
	if err != nil {
		return &coalescerResult{err: err.Error()}
	}
	return &coalescerResult{bytes: n}
}

// coalescerLine matches what TestCoalescerMemoryPerPendingKey logs:
// "coalescer: <N> bytes per pending key (key strings excluded: ...)".
var coalescerLine = regexp.MustCompile(`coalescer: (\S+) bytes per pending key`)

// parseCoalescerMemory reads the bytes per pending key from the output of
// `go test -v -run '^TestCoalescerMemoryPerPendingKey$' ./processor/`.
func parseCoalescerMemory(out string) (float64, error) {
	m := coalescerLine.FindStringSubmatch(out)
	if m == nil {
		switch {
		case strings.Contains(out, "--- SKIP: "+coalescerTest):
			return 0, errors.New(coalescerTest + " was skipped (-short?)")
		case strings.Contains(out, "no tests to run"):
			return 0, errors.New("no test " + coalescerTest + " in ./processor/")
		}
		return 0, errors.New(`no "coalescer: N bytes per pending key" line in the go test output`)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("bytes per pending key %q is not a number of bytes", m[1])
	}
	return n, nil
}

// goTestFailure is a one-line reason for a failed `go test`: its error and
// the line of its output that says best what went wrong (a "--- FAIL" or a
// panic, else the first line that is not a heading or a bare FAIL).
func goTestFailure(err error, out string) string {
	var first, best string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "", l == "FAIL", strings.HasPrefix(l, "FAIL\t"), strings.HasPrefix(l, "=== "), strings.HasPrefix(l, "#"), strings.HasPrefix(l, "exit status "):
		case strings.HasPrefix(l, "--- FAIL") || strings.HasPrefix(l, "panic:"):
			if best == "" {
				best = l
			}
		case first == "":
			first = l
		}
	}
	if best == "" {
		best = first
	}
	reason := "go test: " + err.Error()
	if best != "" {
		reason += ": " + best
	}
	if r := []rune(reason); len(r) > 200 {
		reason = string(r[:199]) + "…"
	}
	return reason
}

// close deletes the run's topics and schema subjects (unless -keep-topics)
// and, after a successful run, the work dir.
func (h *harness) close(ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !h.o.keepTopics {
		if err := h.deleteRunTopics(ctx); err != nil {
			h.log.Warn("could not delete the run's topics", "err", err)
		}
		if err := h.deleteRunSubjects(ctx); err != nil {
			h.log.Warn("could not delete the run's schema subjects", "err", err)
		}
	}
	h.cl.Close()
	if ok && h.o.workDir == "" {
		_ = os.RemoveAll(h.work)
	} else {
		h.log.Info("process logs kept", "dir", h.work)
	}
}

func (h *harness) deleteRunTopics(ctx context.Context) error {
	td, err := h.adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	var mine []string
	for _, t := range td.Names() {
		if strings.HasPrefix(t, h.runID) {
			mine = append(mine, t)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	resp, err := h.adm.DeleteTopics(ctx, mine...)
	if err != nil {
		return err
	}
	return resp.Error()
}

// deleteRunSubjects deletes (soft, then hard) the registry subjects of the
// run's topics.
func (h *harness) deleteRunSubjects(ctx context.Context) error {
	subjects, err := h.reg.Subjects(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range subjects {
		if !strings.HasPrefix(s, h.runID) {
			continue
		}
		if _, err := h.reg.DeleteSubject(ctx, s, sr.SoftDelete); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		} else if _, err := h.reg.DeleteSubject(ctx, s, sr.HardDelete); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

// kafkaCPU returns the Kafka JVM's CPU seconds so far, NaN when unknown.
func (h *harness) kafkaCPU() (float64, error) {
	if h.rb.kafkaPID == 0 {
		return math.NaN(), nil
	}
	return procCPU(h.rb.kafkaPID)
}

// meters are the processes whose CPU each load phase reads.
func (h *harness) meters(server *proc) []meter {
	ms := []meter{procMeter("server", server.pid()), selfMeter}
	if h.rb.kafkaPID != 0 {
		ms = append(ms, procMeter("kafka", h.rb.kafkaPID))
	}
	return ms
}

// maxBody is the body limit of every server: the largest body of the mix,
// and at least LiSA's own 192 KB.
func (h *harness) maxBody() int {
	m := max(h.o.size, 192<<10)
	for _, p := range h.o.mix {
		m = max(m, p.size)
	}
	return m
}

// startEdge runs `productstream ingest` on prefix and waits until its
// public listener answers (/openapi.json, its one route that is not a
// webhook).
func (h *harness) startEdge(ctx context.Context, name, prefix string) (*proc, string, error) {
	return h.startEdgeDebug(ctx, name, prefix, "")
}

// startEdgeDebug is startEdge with ops.listen set to debug (pprof), unless
// empty.
func (h *harness) startEdgeDebug(ctx context.Context, name, prefix, debug string) (*proc, string, error) {
	addr, err := h.ports.Addr()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(h.work, name+".yaml")
	if err := writeConfig(cfg, psConfig{brokers: h.o.brokers, registry: h.o.registry, prefix: prefix, partitions: h.o.parts,
		listen: addr, maxBody: h.maxBody(), group: h.runID + "-unused", exactlyOnce: true, quiet: h.o.quietPeriod, maxDelay: h.o.maxDelay, commit: &h.o.commitInterval,
		debug: debug, svc: h.o.svc}); err != nil {
		return nil, "", fmt.Errorf("write %s: %w", cfg, err)
	}
	p, err := startProc(name, filepath.Join(h.work, name+".log"), nil, h.bin, "ingest", "--config", cfg)
	if err != nil {
		return nil, "", err
	}
	if err := waitHealthy(ctx, p, addr, "/openapi.json", 3*time.Minute); err != nil {
		p.stop(30 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// startBaseline runs this program as B1 or B2 and waits for /healthz.
func (h *harness) startBaseline(ctx context.Context, role string, extra ...string) (*proc, string, error) {
	addr, err := h.ports.Addr()
	if err != nil {
		return nil, "", err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find own executable: %w", err)
	}
	args := append([]string{"-serve", role, "-addr", addr, "-max-body", fmt.Sprint(h.maxBody())}, extra...)
	p, err := startProc(role, filepath.Join(h.work, role+".log"), nil, self, args...)
	if err != nil {
		return nil, "", err
	}
	if err := waitHealthy(ctx, p, addr, "/healthz", time.Minute); err != nil {
		p.stop(10 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

func (h *harness) run(ctx context.Context) (*results, error) {
	res := &results{o: h.o, runID: h.runID, started: time.Now(), kafkaCPU: h.rb.kafkaPID != 0, rbNote: h.rbNote,
		closed: map[string]*loadResult{}, open: map[string]*loadResult{}, mixed: map[string]*loadResult{}, security: h.o.svc.describe()}
	res.machine = h.machine(ctx)
	h.log.Info("run", "id", h.runID, "brokers", h.o.brokers, "work", h.work)

	edgePrefix := h.runID + ".edge."
	if h.o.sections["ingest"] {
		if err := h.runIngest(ctx, res, edgePrefix); err != nil {
			return nil, err
		}
	}
	if h.o.sections["processor"] {
		if err := h.runProcessorSide(ctx, res, edgePrefix); err != nil {
			return nil, err
		}
	}
	if h.o.sections["fresh"] {
		var err error
		h.log.Info("end-to-end freshness", "rate", h.o.freshRate, "duration", h.o.freshDuration)
		if res.fresh, err = h.runFreshness(ctx); err != nil {
			return nil, err
		}
	}
	if h.o.sections["sinks"] {
		if err := h.runSinks(ctx, res); err != nil {
			return nil, err
		}
	}
	if h.o.sections["sinkfresh"] {
		if err := h.runSinkFreshness(ctx, res); err != nil {
			return nil, err
		}
	}
	if h.o.sections["startup"] {
		var err error
		h.log.Info("start-up and takeover of the processor", "launches", h.o.startupLaunches)
		if res.startup, err = h.runStartup(ctx); err != nil {
			return nil, fmt.Errorf("start-up: %w", err)
		}
	}
	// The coalescer's memory is measured last, after every timed phase: its
	// `go test` compiles the processor package and then allocates a million
	// keys (hundreds of MB and a few full GCs), which would take CPU and
	// memory from whatever ran beside or after it. At the end nothing is
	// timed any more, and its figure (the test process's own heap) does not
	// depend on what else the machine is doing. Run first, it would also
	// raise the load average reported "at start" and could push Kafka's
	// page cache out right before the first phase.
	if h.o.coalescerMemory && h.o.sections["processor"] {
		h.log.Info("coalescer memory per pending key", "test", coalescerTest)
		res.coalescer = measureCoalescerMemory(ctx, h.root)
		if res.coalescer.err != "" {
			h.log.Warn("coalescer memory not measured", "why", res.coalescer.err)
		}
	}
	res.elapsed = time.Since(res.started)
	return res, nil
}

// server is one HTTP server under load.
type server struct {
	name   string
	proc   *proc
	target *target
	meters []meter
	pprof  string // where it serves CPU profiles (-profile); empty: nowhere
	bin    string // the binary it runs, for go tool pprof
}

// runIngest measures the three HTTP servers; the edge writes to edgePrefix.
// All three run at once (an idle one costs nothing), and each phase is
// split into o.rounds rounds that rotate through the servers, so that a
// burst of noise from other tenants of the machine does not fall on one
// server only.
func (h *harness) runIngest(ctx context.Context, res *results, edgePrefix string) error {
	b2Topic := h.runID + ".b2"
	if err := h.createTopic(ctx, b2Topic); err != nil {
		return err
	}
	var srvs []*server
	defer func() {
		for _, s := range srvs {
			s.target.close()
			s.proc.stop(30 * time.Second)
		}
	}()
	add := func(name string, p *proc, addr, pprof, bin string) {
		srvs = append(srvs, &server{name: name, proc: p, target: newTarget(name, "http://"+addr+lisaPath, h.o.concurrency), meters: h.meters(p),
			pprof: pprof, bin: bin})
	}
	// B2 and the edge serve CPU profiles for the profiled phase, which
	// only then costs them anything.
	var b2Prof, edgeProf string
	if h.o.profile {
		var err error
		if b2Prof, err = h.ports.Addr(); err != nil {
			return err
		}
		if edgeProf, err = h.ports.Addr(); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	p, addr, err := h.startBaseline(ctx, "b1")
	if err != nil {
		return err
	}
	add(srvB1, p, addr, "", self)
	b2Args := h.childArgs("", "-topic", b2Topic, "-linger", h.o.b2Linger.String())
	if b2Prof != "" {
		b2Args = append(b2Args, "-pprof", b2Prof)
	}
	if p, addr, err = h.startBaseline(ctx, "b2", b2Args...); err != nil {
		return err
	}
	add(srvB2, p, addr, b2Prof, self)
	if p, addr, err = h.startEdgeDebug(ctx, "edge", edgePrefix, edgeProf); err != nil {
		return err
	}
	add(srvEdge, p, addr, edgeProf, h.bin)

	one := workload{mix: []mixPart{{h.o.size, 1}}, keys: h.o.keys, zipfS: h.o.zipfS, seed: h.o.seed}
	mixed := one
	mixed.mix = h.o.mix
	// phase runs spec against every server, round by round, and merges
	// each server's rounds into into[server].
	phase := func(spec loadSpec, into map[string]*loadResult) error {
		rounds := max(1, h.o.rounds)
		spec.duration /= time.Duration(rounds)
		for r := range rounds {
			for i := range srvs {
				s := srvs[(i+r)%len(srvs)]
				h.log.Info("load", "server", s.name, "phase", spec.phase, "round", r+1, "bodies", spec.work.label(), "rate", int(spec.rate), "duration", spec.duration)
				l, err := runLoad(ctx, s.target, spec, s.meters)
				if err != nil {
					return fmt.Errorf("%s %s: %w", s.name, spec.phase, err)
				}
				if err := s.proc.failed(); err != nil {
					return err
				}
				h.log.Info("done", "server", s.name, "phase", spec.phase, "req/s", int(l.rps()), "p99", l.pct(0.99), "errors", l.errors())
				if into != nil {
					into[s.name] = into[s.name].merge(l)
				}
			}
		}
		return nil
	}
	if h.o.warmup > 0 {
		// Every server, and Kafka (JIT, page cache) with them.
		if err := phase(loadSpec{phase: "warmup", duration: h.o.warmup, senders: h.o.concurrency, work: one}, nil); err != nil {
			return err
		}
	}
	if err := phase(loadSpec{phase: "closed", duration: h.o.duration, senders: h.o.concurrency, work: one}, res.closed); err != nil {
		return err
	}
	// Every server is measured open loop at half of the edge's maximum.
	if res.openRate = res.closed[srvEdge].rps() / 2; res.openRate < 1 {
		return errors.New("edge: no throughput to take half of")
	}
	if err := phase(loadSpec{phase: "open", rate: res.openRate, duration: h.o.openDuration, senders: h.o.concurrency, work: one}, res.open); err != nil {
		return err
	}
	if err := phase(loadSpec{phase: "mixed", duration: h.o.mixedDuration, senders: h.o.concurrency, work: mixed}, res.mixed); err != nil {
		return err
	}
	if !h.o.profile {
		return nil
	}
	// Profiled phases of their own, after the measured ones, so that the
	// profiler's cost is in no figure: B2 and the edge, closed loop, 1 KB.
	for _, s := range srvs {
		if s.pprof == "" {
			continue
		}
		pr, err := h.profileServer(ctx, s, loadSpec{phase: "profile", duration: ingestProfileDuration, senders: h.o.concurrency, work: one})
		if err != nil {
			h.log.Warn("CPU profile not taken", "server", s.name, "err", err)
			continue
		}
		res.ingestProfiles = append(res.ingestProfiles, pr)
	}
	return nil
}

// ingestProfileDuration is each profiled ingest phase.
const ingestProfileDuration = 5 * time.Second

// profileServer runs spec against s while taking back-to-back CPU
// profiles of it, and summarizes them per request answered.
func (h *harness) profileServer(ctx context.Context, s *server, spec loadSpec) (*profileResult, error) {
	h.log.Info("CPU profile", "server", s.name)
	stop := make(chan struct{})
	var files []string
	var perr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		files, perr = cpuProfiles(ctx, s.pprof, h.work, "profile-"+s.name, stop)
	}()
	l, err := runLoad(ctx, s.target, spec, s.meters)
	close(stop)
	<-done
	if err != nil {
		return nil, fmt.Errorf("%s profiled load: %w", s.name, err)
	}
	if perr != nil {
		return nil, perr
	}
	pr := &profileResult{name: s.name, changes: int64(l.accepted), files: files}
	if err := summarize(ctx, h.root, s.bin, pr, edgeProfileAreas); err != nil {
		return nil, err
	}
	return pr, nil
}

// runProcessorSide measures B3, the processor in both modes and the
// restore, over the changes the edge wrote under edgePrefix.
func (h *harness) runProcessorSide(ctx context.Context, res *results, edgePrefix string) error {
	// Each round has its own copy of the input for each processor mode
	// (a processor writes its outputs under its input's prefix); B3 reads
	// the first copy again in a new group each round.
	rounds := max(1, h.o.procRounds)
	prefix := func(mode string, r int) string { return fmt.Sprintf("%s.%s%d.", h.runID, mode, r+1) }
	var dests []string
	for r := range rounds {
		dests = append(dests, prefix("alo", r)+"changes", prefix("eos", r)+"changes")
	}
	if h.o.profile {
		dests = append(dests, prefix("palo", 0)+"changes", prefix("peos", 0)+"changes")
	}
	h.log.Info("copying the edge's 1 KB changes into the processor inputs", "copies", len(dests))
	var err error
	if res.input, err = h.prepareInput(ctx, edgePrefix+"changes", dests); err != nil {
		return err
	}
	h.log.Info("processor input", "changes", res.input.n, "distinct_records", res.input.small, "repeats", res.input.rounds)

	// Rounds alternate the order (B3, off, on, then on, off, B3, ...), so
	// that a drift in the machine's load does not favour one of them.
	// processorStep runs the processor with transactions on or off (mode
	// names its topics and group) and adds the round to *into.
	processorStep := func(onOff, mode string, eos bool, into **procResult) func(r int) error {
		return func(r int) error {
			h.log.Info("processor, transactions "+onOff, "round", r+1)
			p, err := h.runProcessor(ctx, fmt.Sprintf("processor-%s%d", mode, r+1), prefix(mode, r), eos, res.input, nil)
			if err != nil {
				return err
			}
			h.log.Info("done", "changes/s", int(p.rate()), "updates", p.updates)
			*into = (*into).merge(p)
			return nil
		}
	}
	steps := []func(r int) error{
		func(r int) error {
			h.log.Info("B3 passthrough", "round", r+1)
			b3, err := h.runB3(ctx, res.input, prefix("alo", 0)+"changes", r)
			if err != nil {
				return err
			}
			h.log.Info("done", "records/s", int(b3.rate()))
			res.b3 = res.b3.merge(b3)
			return nil
		},
		processorStep("off", "alo", false, &res.alo),
		processorStep("on", "eos", true, &res.eos),
	}
	for r := range rounds {
		for i := range steps {
			if r%2 == 1 {
				i = len(steps) - 1 - i
			}
			if err := steps[i](r); err != nil {
				return err
			}
		}
	}

	if h.o.profile {
		// Profiled runs of their own, after the measured ones, so that the
		// profiler's cost is in no figure.
		for _, m := range []struct {
			mode, name string
			eos        bool
		}{{"palo", "processor, transactions off", false}, {"peos", "processor, transactions on", true}} {
			h.log.Info("CPU profile", "run", m.name)
			pr := &profileResult{name: m.name, changes: res.input.n}
			if _, err := h.runProcessor(ctx, "profile-"+m.mode, prefix(m.mode, 0), m.eos, res.input, pr); err != nil {
				return err
			}
			if err := summarize(ctx, h.root, h.bin, pr, profileAreas); err != nil {
				h.log.Warn("CPU profile not summarized", "run", m.name, "err", err)
				continue
			}
			res.profiles = append(res.profiles, pr)
		}
	}

	// The restore reads a products topic of its own, on a prefix of its
	// own: the first transactional run's state records, copied with
	// unique keys until there are enough for the ratio to be about
	// records/s rather than the fixed costs of a client and its offsets.
	rst := prefix("rst", 0)
	h.log.Info("building the restore's products topic", "from", prefix("eos", 0)+"products", "to", rst+"products", "records", h.o.restoreRecords)
	if res.restoreIn, err = h.buildRestoreInput(ctx, prefix("eos", 0)+"products", rst+"products"); err != nil {
		return err
	}
	h.log.Info("restore input", "records", res.restoreIn.records, "state_records", res.restoreIn.source, "copies", res.restoreIn.copies)
	h.log.Info("restore of products, beside B3's consume-only rate")
	if res.restore, res.b3consume, err = h.measureRestore(ctx, rst); err != nil {
		return err
	}
	h.log.Info("done", "restore_records/s", int(res.restore.rate()), "b3_records/s", int(float64(res.b3consume.Records)/res.b3consume.Seconds))
	return nil
}

// machine describes the machine and the versions of the run.
func (h *harness) machine(ctx context.Context) [][2]string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	load := loadAverage()
	kafka := h.rb.version
	if kafka == "" {
		kafka = "unknown"
		if v, err := h.adm.ApiVersions(ctx); err == nil {
			for _, b := range v.Sorted() {
				kafka = "unknown (ApiVersions suggests " + b.VersionGuess() + ")"
				break
			}
		}
	}
	return [][2]string{
		{"CPU", cpu},
		{"cores (runtime.NumCPU)", fmt.Sprint(runtime.NumCPU())},
		{"kernel", kernel},
		{"load average at start", load},
		{"Go", runtime.Version()},
		{"Kafka", kafka},
		{"schema registry", registryVersion(h.o.registry)},
	}
}

// loadAverage is the machine's load average over 1, 5 and 15 minutes.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// registryVersion asks an Apicurio registry for its version; other
// registries are named by their URL only.
func registryVersion(url string) string {
	base, ok := strings.CutSuffix(strings.TrimRight(url, "/"), "/apis/ccompat/v7")
	if !ok {
		return "Confluent API at " + url
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/apis/registry/v3/system/info")
	if err != nil {
		return "Apicurio (version unknown)"
	}
	defer resp.Body.Close()
	var info struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if json.NewDecoder(resp.Body).Decode(&info) != nil || info.Version == "" {
		return "Apicurio (version unknown)"
	}
	return "Apicurio Registry " + info.Version
}
