package main

// The sinks section: each sink kind (OpenSearch, PostgreSQL, Redis,
// webhook) runs as `productstream sink` runs it, in process (a
// sink.Runner over the real backend writer of package sink/<kind>), over a
// products topic of real state records, beside B4-<kind>: a plain franz-go
// consumer of the same topic that decodes the same values and does only the
// bare write of the same documents, batch for batch (bare.go). Both are
// timed the same way, from the assignment of the group's partitions until
// its committed offsets reach the end of the topic, in alternating order.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/opensearch"
	"github.com/productstream/productstream/sink/postgres"
	"github.com/productstream/productstream/sink/redis"
	"github.com/productstream/productstream/sink/webhook"
)

// sinkTarget is the sinks issue's target: every sink at least this
// fraction of its bare write's records/s.
const sinkTarget = 0.8

// sinkInput is the products topic every sink and baseline reads.
type sinkInput struct {
	topic      string
	sent       int   // products sent, each once, with a body of -size bytes
	accepted   int   // of those, answered 202
	records    int64 // committed state records on topic
	valueBytes int64
	// ends are, per partition, the offset after its last record: what a
	// consumer that read it all commits (the processor writes in
	// transactions, so a commit marker follows, which nobody commits past).
	ends map[int32]int64
	took time.Duration // from the edge's start until every state was written
	load *loadResult   // the requests that sent the products
}

// sinkRun is one throughput measurement of a sink or of its baseline, or
// the sum of several rounds.
type sinkRun struct {
	records    int64
	batches    int64
	retries    int64 // the runner's retried writes (sinks only)
	elapsed    time.Duration
	cpu        float64 // CPU seconds of the harness process: the sink or the baseline (and, for webhooks, the receiver)
	backendCPU float64 // NaN: not measured
	kafkaCPU   float64 // NaN: not measured
	rounds     int
	perRound   []float64 // records/s of each round, in the order run
	// osIndexing is OpenSearch's own indexing time for the run's index
	// (index stats, index_time_in_millis), in seconds: 0 for the others.
	osIndexing float64
}

func (r *sinkRun) merge(o *sinkRun) *sinkRun {
	switch {
	case o == nil:
		return r
	case r == nil:
		o.rounds, o.perRound = 1, []float64{o.rate()}
		return o
	}
	r.perRound = append(r.perRound, o.rate())
	r.records += o.records
	r.batches += o.batches
	r.retries += o.retries
	r.elapsed += o.elapsed
	r.cpu += o.cpu
	r.backendCPU += o.backendCPU
	r.kafkaCPU += o.kafkaCPU
	r.osIndexing += o.osIndexing
	r.rounds++
	return r
}

func (r *sinkRun) rate() float64 {
	if r == nil || r.elapsed <= 0 {
		return 0
	}
	return float64(r.records) / r.elapsed.Seconds()
}

// median is the median of the rounds' records/s (the mean of the middle
// two for an even count): a burst of other work on the machine during one
// round moves it less than the total.
func (r *sinkRun) median() float64 {
	if r == nil || len(r.perRound) == 0 {
		return 0
	}
	v := slices.Clone(r.perRound)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// per1k is v (CPU seconds) per 1,000 records; NaN stays NaN.
func (r *sinkRun) per1k(v float64) float64 {
	if r == nil || r.records == 0 {
		return math.NaN()
	}
	return v / float64(r.records) * 1000
}

// meanBatch is the mean number of records per write.
func (r *sinkRun) meanBatch() float64 {
	if r == nil || r.batches == 0 {
		return math.NaN()
	}
	return float64(r.records) / float64(r.batches)
}

// sinkResult is one kind's sink beside its baseline.
type sinkResult struct {
	kind       string
	sink, base *sinkRun
	profiles   []*profileResult // the sink's and the baseline's, when the sink missed its target and -profile is set
}

// ratio is the sink's median round over its baseline's: the figure the
// target is checked on.
func (r *sinkResult) ratio() float64 {
	if r == nil {
		return math.NaN()
	}
	return div(r.sink.median(), r.base.median())
}

// totalRatio is the sink's records/s over all its rounds over its
// baseline's.
func (r *sinkResult) totalRatio() float64 {
	if r == nil {
		return math.NaN()
	}
	return div(r.sink.rate(), r.base.rate())
}

// backendInfo says what a backend is and how its CPU is read.
type backendInfo struct {
	name  string                  // e.g. "OpenSearch 3.9.0"
	cpu   func() (float64, error) // nil: not measured
	note  string                  // why not, when cpu is nil
	where string                  // its address, for the report
}

// sinkEnv is what every run of the sinks section shares.
type sinkEnv struct {
	h        *harness
	in       *sinkInput
	log      *slog.Logger
	hook     *receiver
	osHTTP   *http.Client
	osIndex  []byte // settings and mappings of the sink's generation indexes, for the baseline's indexes
	pg       *pgxpool.Pool
	rdb      *goredis.Client
	backends map[string]backendInfo
	secret   string // the webhook sink's whsec_ secret
}

// runSinks builds the sinks' input, measures each sink beside its
// baseline, and profiles those below their target.
func (h *harness) runSinks(ctx context.Context, res *results) error {
	h.log.Info("sinks: sending the input's products through the edge and the processor", "products", h.o.sinkRecords)
	in, err := h.buildSinkInput(ctx)
	if err != nil {
		return fmt.Errorf("sinks input: %w", err)
	}
	res.sinkIn = in
	h.log.Info("sinks input", "topic", in.topic, "records", in.records, "bytes_per_value", in.valueBytes/max(in.records, 1), "took", in.took.Round(time.Millisecond))
	e, err := h.newSinkEnv(ctx, in)
	if err != nil {
		return err
	}
	defer e.close()
	res.backends = e.backends
	res.sinkLoad[0] = loadAverage()
	for _, kind := range h.o.sinkKinds {
		r, err := e.measure(ctx, kind)
		if err != nil {
			return fmt.Errorf("sink %s: %w", kind, err)
		}
		res.sinks = append(res.sinks, r)
		h.log.Info("sink done", "kind", kind, "sink_records/s", int(r.sink.median()), "baseline_records/s", int(r.base.median()), "ratio", ratioText(r.ratio()), "ratio_all_rounds", ratioText(r.totalRatio()))
	}
	res.sinkLoad[1] = loadAverage()
	if h.o.profile {
		for _, r := range res.sinks {
			if !(r.ratio() < sinkTarget) {
				continue
			}
			h.log.Info("CPU profile of a sink below its target, and of its baseline", "kind", r.kind)
			if r.profiles, err = e.profile(ctx, r.kind); err != nil {
				h.log.Warn("sink CPU profile", "kind", r.kind, "err", err)
			}
		}
	}
	return nil
}

// runSinkFreshness measures freshness to every sink measured, at each of
// -sink-fresh-rates.
func (h *harness) runSinkFreshness(ctx context.Context, res *results) error {
	e, err := h.newSinkEnv(ctx, nil)
	if err != nil {
		return err
	}
	defer e.close()
	if res.backends == nil {
		res.backends = e.backends
	}
	for _, rate := range h.o.sinkFreshRates {
		h.log.Info("freshness to the sinks", "sinks", h.o.sinkKinds, "rate", rate, "duration", h.o.sinkFreshDuration)
		f, err := e.runFreshness(ctx, rate)
		if err != nil {
			return fmt.Errorf("freshness to the sinks at %s req/s: %w", rateText(rate), err)
		}
		for _, s := range f.sinks {
			h.log.Info("done", "sink", s.kind, "rate", rate, "visible_p50", quantile(s.visible, 0.5), "visible_p99", quantile(s.visible, 0.99), "visible", len(s.visible), "accepted", f.accepted)
		}
		res.sinkFresh = append(res.sinkFresh, f)
	}
	return nil
}

// buildSinkInput sends -sink-records products, each once, through an edge
// and a transactional processor on a prefix of their own, and waits until
// the processor has written every accepted product's state to products.
func (h *harness) buildSinkInput(ctx context.Context) (*sinkInput, error) {
	start := time.Now()
	prefix := h.runID + ".sinks."
	edge, addr, err := h.startEdge(ctx, "sinks-edge", prefix)
	if err != nil {
		return nil, err
	}
	defer edge.stop(30 * time.Second)
	p, _, err := h.startProcessor(ctx, "sinks-processor", prefix, h.runID+"-sinks", true, "")
	if err != nil {
		return nil, err
	}
	defer p.stop(30 * time.Second)
	products, err := h.watchArrivals(ctx, prefix+"products")
	if err != nil {
		return nil, err
	}
	defer products.stop()
	t := newTarget("edge", "http://"+addr+lisaPath, h.o.concurrency)
	defer t.close()
	// An open loop at a rate no server reaches: every request is due at
	// once, so the senders send exactly -sink-records requests as fast as
	// the edge answers them.
	const rate = 1e6
	n := h.o.sinkRecords
	load, err := runLoad(ctx, t, loadSpec{phase: "sinks input", rate: rate, duration: time.Duration((float64(n) + 0.5) / rate * float64(time.Second)),
		senders: h.o.concurrency, work: workload{mix: []mixPart{{h.o.size, 1}}, seed: h.o.seed, unique: true}}, nil)
	if err != nil {
		return nil, err
	}
	if load.accepted == 0 {
		return nil, fmt.Errorf("the edge accepted none of %d products (%v, %s)", load.sent, load.status, load.firstErr)
	}
	ok, err := waitUntil(ctx, time.Now().Add(2*time.Minute+10*h.o.maxDelay), func() bool { return products.keys() >= load.accepted })
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s holds %d of the %d accepted products after 2m; processor log %s", prefix+"products", products.keys(), load.accepted, p.logPath)
	}
	products.stop()
	in := &sinkInput{topic: prefix + "products", sent: load.sent, accepted: load.accepted, took: time.Since(start),
		records: products.records, valueBytes: products.valueBytes, ends: products.next, load: load}
	return in, nil
}

// newSinkEnv connects to the backends of the kinds measured (and to
// OpenSearch, for the freshness run), finds their processes for their CPU,
// and starts the webhook receiver.
func (h *harness) newSinkEnv(ctx context.Context, in *sinkInput) (*sinkEnv, error) {
	e := &sinkEnv{h: h, in: in, log: h.log, backends: map[string]backendInfo{},
		secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("bench-webhook-secret"))}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	e.osHTTP = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConns: 16, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}
	info, err := e.openSearchInfo(ctx)
	if err != nil {
		return nil, err
	}
	e.backends["opensearch"] = info
	if e.osIndex, err = e.openSearchIndexBody(ctx); err != nil {
		return nil, err
	}
	for _, kind := range h.o.sinkKinds {
		switch kind {
		case "postgres":
			if e.pg, err = pgxpool.New(ctx, h.o.postgresDSN); err != nil {
				return nil, fmt.Errorf("postgres: %w", err)
			}
			if e.backends[kind], err = e.postgresInfo(ctx); err != nil {
				return nil, err
			}
		case "redis":
			e.rdb = goredis.NewClient(&goredis.Options{Addr: h.o.redisAddr})
			if e.backends[kind], err = e.redisInfo(ctx); err != nil {
				return nil, err
			}
		case "webhook":
			if e.hook, err = startReceiver(); err != nil {
				return nil, err
			}
			e.backends[kind] = backendInfo{name: "a loopback net/http server in the harness, answering 204", where: e.hook.url,
				note: "the receiver runs in the harness process: its CPU is in the harness's figure"}
		}
	}
	ok = true
	return e, nil
}

func (e *sinkEnv) close() {
	if e.pg != nil {
		e.pg.Close()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
	if e.hook != nil {
		e.hook.close()
	}
	if e.osHTTP != nil {
		e.osHTTP.CloseIdleConnections()
	}
}

// measure runs kind's sink and its baseline -sink-rounds times each, in
// alternating order (baseline, sink, sink, baseline, ...).
func (e *sinkEnv) measure(ctx context.Context, kind string) (*sinkResult, error) {
	r := &sinkResult{kind: kind}
	steps := []func(round int) error{
		func(round int) error {
			e.log.Info("sink baseline", "name", baselineName(kind), "round", round+1)
			run, err := e.runBaseline(ctx, kind, fmt.Sprintf("b4-%s%d", kind, round+1), nil)
			if err != nil {
				return err
			}
			e.log.Info("done", "records/s", int(run.rate()), "batches", run.batches)
			r.base = r.base.merge(run)
			return nil
		},
		func(round int) error {
			e.log.Info("sink", "kind", kind, "round", round+1)
			run, err := e.runSink(ctx, kind, fmt.Sprintf("%s-sink%d", kind, round+1), nil)
			if err != nil {
				return err
			}
			e.log.Info("done", "records/s", int(run.rate()), "batches", run.batches)
			r.sink = r.sink.merge(run)
			return nil
		},
	}
	for round := range max(1, e.h.o.sinkRounds) {
		for i := range steps {
			if round%2 == 1 {
				i = len(steps) - 1 - i
			}
			if err := steps[i](round); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// profile runs kind's sink and its baseline once more each, taking a CPU
// profile of the harness process (where both run) from the assignment to
// the last commit, and summarizes the two.
func (e *sinkEnv) profile(ctx context.Context, kind string) ([]*profileResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var out []*profileResult
	for _, p := range []struct {
		name string
		run  func(ctx context.Context, kind, name string, prof io.Writer) (*sinkRun, error)
	}{{kind + " sink", e.runSink}, {baselineName(kind), e.runBaseline}} {
		path := filepath.Join(e.h.work, "profile-"+strings.ReplaceAll(p.name, " ", "-")+".pprof")
		f, err := os.Create(path)
		if err != nil {
			return out, err
		}
		run, err := p.run(ctx, kind, "p-"+strings.ToLower(strings.ReplaceAll(p.name, " ", "-")), f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return out, err
		}
		pr := &profileResult{name: p.name, changes: run.records, files: []string{path}}
		if err := summarize(ctx, e.h.root, exe, pr, sinkProfileAreas); err != nil {
			return out, err
		}
		out = append(out, pr)
	}
	return out, nil
}

// sinkProfileAreas are the parts reported for the sinks' profiles (a
// sample may count in more than one).
var sinkProfileAreas = []profileArea{
	{label: "Avro decode of the values (`Serde.DecodeJSON`: goavro)", focus: `schemas\.\(\*Serde\)\.DecodeJSON`},
	{label: "the runner's read of each value's version and deleted flags (`json.Unmarshal` in `Runner.record`)", focus: `sink\.\(\*Runner\)\.record`, ignore: `DecodeJSON`},
	{label: "the writer: requests built, sent and read (`sink/<kind>`, or the baseline's)", focus: `productstream/sink/(opensearch|postgres|redis|webhook)\.|main\.\(\*(osBare|pgBare|redisBare|webhookBare)\)`},
	{label: "encoding/json, wherever called", focus: `encoding/json\.`},
	{label: "backend client (opensearch-go, pgx, go-redis, net/http client)", focus: `github\.com/opensearch-project|github\.com/jackc/pgx|github\.com/redis/go-redis|net/http\.\(\*(Client|Transport|persistConn)\)`},
	{label: "franz-go (fetch, group, commit)", focus: `github\.com/twmb/franz-go`},
	{label: "net/http server (the webhook receiver)", focus: `net/http\.\(\*conn\)\.serve`},
	{label: "garbage collector (background mark workers)", focus: `runtime\.gcBgMarkWorker`},
	{label: "system calls", focus: `syscall\.Syscall|syscall\.RawSyscall|internal/runtime/syscall`},
}

func baselineName(kind string) string { return "B4-" + kind }

// runSink runs kind's sink once over the input, into a backend object of
// its own (an alias, a table, a key prefix) that is dropped afterwards.
// With prof, the harness process is CPU-profiled into it over the timed
// part.
func (e *sinkEnv) runSink(ctx context.Context, kind, name string, prof io.Writer) (*sinkRun, error) {
	h := e.h
	w, target, err := e.newSink(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	defer e.drop(kind, true, target)
	defer w.Close()
	dlq := h.runID + ".sinks.sink." + name + ".dlq"
	if err := h.createTopic(ctx, dlq); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	m, err := sink.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	group := h.runID + "-sink-" + name
	log := e.log.With("sink", name)
	run, err := e.timed(ctx, kind, group, prof, func(ctx context.Context, assigned kgo.Opt) error {
		r, err := sink.NewRunner(sink.Config{
			Name: name, Sink: w, Client: h.o.svc.clientOptions(log, assigned),
			Topic: e.in.topic, Group: group, DLQ: dlq,
			MaxRecords: h.o.sinkBatch, MaxBytes: config.DefaultSinkBatchBytes, Linger: h.o.sinkLinger,
			RetryInitial: config.DefaultSinkRetryInitial, RetryMax: config.DefaultSinkRetryMax,
			Decoder: schemas.NewSerde(h.reg), Metrics: m, Log: log,
		})
		if err != nil {
			return err
		}
		return r.Run(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c, err := gatherSinkCounts(reg)
	if err != nil {
		return nil, err
	}
	if c.outcomes["applied"] != e.in.records || c.outcomes["dlq"] > 0 {
		return nil, fmt.Errorf("%s applied %d of %d records (outcomes %v)", name, c.outcomes["applied"], e.in.records, c.outcomes)
	}
	run.batches, run.retries = c.batches, c.retries
	if err := e.check(ctx, kind, true, target); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if kind == "opensearch" {
		if run.osIndexing, err = e.openSearchIndexing(ctx, target+"-g1"); err != nil {
			return nil, err
		}
	}
	return run, nil
}

// runBaseline runs kind's baseline once over the input, into a backend
// object of its own, dropped afterwards.
func (e *sinkEnv) runBaseline(ctx context.Context, kind, name string, prof io.Writer) (*sinkRun, error) {
	w, target, err := e.newBare(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	defer e.drop(kind, false, target)
	defer w.close()
	group := e.h.runID + "-" + name
	var batches atomic.Int64
	run, err := e.timed(ctx, kind, group, prof, func(ctx context.Context, assigned kgo.Opt) error {
		return e.bare(ctx, group, assigned, w, &batches)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	run.batches = batches.Load()
	if err := e.check(ctx, kind, false, target); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if kind == "opensearch" {
		if run.osIndexing, err = e.openSearchIndexing(ctx, target); err != nil {
			return nil, err
		}
	}
	return run, nil
}

// cpuReading is the CPU seconds used so far by the harness, the backend
// and Kafka (NaN: unknown).
type cpuReading struct{ self, backend, kafka float64 }

func (e *sinkEnv) readCPU(kind string) cpuReading {
	c := cpuReading{self: selfCPU(), backend: math.NaN(), kafka: math.NaN()}
	if f := e.backends[kind].cpu; f != nil {
		if v, err := f(); err == nil {
			c.backend = v
		}
	}
	if v, err := e.h.kafkaCPU(); err == nil {
		c.kafka = v
	}
	return c
}

// timed runs consume (a consumer of the input in group, which must pass
// assigned to its client) until the group's committed offsets reach the
// input's ends. Time and CPU run from the group's first assignment to the
// poll that saw the end committed (every commitPoll), so a sink and its
// baseline are timed alike. With prof, the harness process is CPU-profiled
// into it over that time.
func (e *sinkEnv) timed(ctx context.Context, kind, group string, prof io.Writer, consume func(context.Context, kgo.Opt) error) (*sinkRun, error) {
	type mark struct {
		at  time.Time
		cpu cpuReading
	}
	var start atomic.Pointer[mark]
	var profErr atomic.Pointer[error]
	assigned := kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
		if start.Load() != nil {
			return
		}
		if prof != nil {
			if err := pprof.StartCPUProfile(prof); err != nil {
				profErr.Store(&err)
			}
		}
		start.Store(&mark{at: time.Now(), cpu: e.readCPU(kind)})
	})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- consume(cctx, assigned) }()
	stopProfile := func() {
		if prof != nil && start.Load() != nil && profErr.Load() == nil {
			pprof.StopCPUProfile()
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		at, err := e.committed(ctx, group)
		if err != nil {
			cancel()
			<-done
			stopProfile()
			return nil, err
		}
		if at {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			stopProfile()
			return nil, errors.New("the end of the input not committed after 10m")
		}
		select {
		case err := <-done:
			stopProfile()
			return nil, fmt.Errorf("stopped before committing the end of the input: %v", err)
		case <-ctx.Done():
			<-done
			stopProfile()
			return nil, ctx.Err()
		case <-time.After(commitPoll):
		}
	}
	end, c1 := time.Now(), e.readCPU(kind)
	stopProfile()
	cancel()
	if err := <-done; err != nil {
		return nil, err
	}
	if perr := profErr.Load(); perr != nil {
		return nil, fmt.Errorf("CPU profile: %w", *perr)
	}
	s := start.Load()
	if s == nil {
		return nil, errors.New("the end was committed before the assignment callback ran")
	}
	return &sinkRun{records: e.in.records, elapsed: end.Sub(s.at), cpu: c1.self - s.cpu.self,
		backendCPU: c1.backend - s.cpu.backend, kafkaCPU: c1.kafka - s.cpu.kafka, rounds: 1}, nil
}

// commitPoll is how often timed asks for a group's committed offsets: a
// run's end is known to within it (the same for a sink and its baseline).
const commitPoll = 10 * time.Millisecond

// committed reports whether group's committed offsets have reached the
// input's ends.
func (e *sinkEnv) committed(ctx context.Context, group string) (bool, error) {
	offs, err := e.h.adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return false, nil // not joined yet (kfake says so; Kafka answers no offsets)
	}
	if err != nil {
		return false, fmt.Errorf("committed offsets of %s: %w", group, err)
	}
	for part, end := range e.in.ends {
		if o, ok := offs.Lookup(e.in.topic, part); end > 0 && (!ok || o.Err != nil || o.At < end) {
			return false, nil
		}
	}
	return true, nil
}

// sinkCounts are what a runner's metrics counted.
type sinkCounts struct {
	outcomes map[string]int64
	batches  int64
	retries  int64
}

// gatherSinkCounts reads the runner's counts from its registry.
func gatherSinkCounts(reg *prometheus.Registry) (sinkCounts, error) {
	c := sinkCounts{outcomes: map[string]int64{}}
	mfs, err := reg.Gather()
	if err != nil {
		return c, fmt.Errorf("sink metrics: %w", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "productstream_sink_records_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						c.outcomes[l.GetValue()] += int64(m.GetCounter().GetValue())
					}
				}
			case "productstream_sink_retries_total":
				c.retries += int64(m.GetCounter().GetValue())
			case "productstream_sink_batch_seconds":
				c.batches += int64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return c, nil
}

// newSink builds kind's real backend writer, as `productstream sink` does
// from a configuration, writing to a backend object named after name. It
// returns the object's name, for check and drop.
func (e *sinkEnv) newSink(ctx context.Context, kind, name string) (sink.Sink, string, error) {
	h := e.h
	log := e.log.With("sink", name)
	switch kind {
	case "opensearch":
		return e.newOpenSearch(ctx, name, 0)
	case "postgres":
		table := pgName(h.runID, name)
		s, err := postgres.New(ctx, config.SinkPostgres{DSN: h.o.postgresDSN, Table: table}, log)
		return s, table, err
	case "redis":
		prefix := h.runID + ":" + name + ":"
		s, err := redis.New(ctx, config.SinkRedis{Addr: h.o.redisAddr, KeyPrefix: prefix}, log)
		return s, prefix, err
	case "webhook":
		e.hook.reset()
		s, err := e.newWebhook(ctx, e.hook.url, name)
		return s, "", err
	}
	return nil, "", fmt.Errorf("unknown sink %q", kind)
}

// newOpenSearch builds an OpenSearch sink whose alias is named after name,
// with refresh as its refresh_interval (0: OpenSearch's default); it
// returns the alias.
func (e *sinkEnv) newOpenSearch(ctx context.Context, name string, refresh time.Duration) (sink.Sink, string, error) {
	alias := strings.ToLower(e.h.runID + "-" + name)
	s, err := opensearch.New(ctx, config.SinkOpenSearch{URLs: []string{e.h.o.opensearchURL}, Index: alias, RefreshInterval: refresh}, e.log.With("sink", name))
	return s, alias, err
}

// newWebhook builds a webhook sink posting to url.
func (e *sinkEnv) newWebhook(ctx context.Context, url, name string) (sink.Sink, error) {
	return webhook.New(ctx, config.SinkWebhook{URL: url, Secrets: []string{e.secret}, Timeout: config.DefaultWebhookTimeout,
		AllowPrivate: true, Concurrency: e.h.o.webhookConcurrency}, e.log.With("sink", name))
}

// pgName is a PostgreSQL table name for a run's object: lower case, '_'
// for '-', '.' and ':'.
func pgName(runID, name string) string {
	return strings.NewReplacer("-", "_", ".", "_", ":", "_").Replace(strings.ToLower(runID + "_" + name))
}

// check verifies that the backend object holds every record of the input
// (the webhook receiver: received one request per record).
func (e *sinkEnv) check(ctx context.Context, kind string, isSink bool, target string) error {
	var n int64
	var err error
	switch kind {
	case "opensearch":
		n, err = e.openSearchCount(ctx, target)
	case "postgres":
		err = e.pg.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{target}.Sanitize()).Scan(&n)
	case "redis":
		err = e.redisScan(ctx, target, func(keys []string) error {
			for _, k := range keys {
				if !strings.HasSuffix(k, "@generations") || !isSink {
					n++
				}
			}
			return nil
		})
	case "webhook":
		n = e.hook.n.Load()
	}
	if err != nil {
		return fmt.Errorf("count what %s holds: %w", kind, err)
	}
	if n != e.in.records {
		return fmt.Errorf("%s holds %d records after the run, want %d", kind, n, e.in.records)
	}
	return nil
}

// drop removes a run's backend object; failures are logged.
func (e *sinkEnv) drop(kind string, isSink bool, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	switch kind {
	case "opensearch":
		if isSink {
			err = errors.Join(e.openSearchDo(ctx, http.MethodDelete, "/"+target+"-g1", nil, nil),
				e.openSearchDo(ctx, http.MethodDelete, "/_index_template/"+target+"-template", nil, nil))
		} else {
			err = e.openSearchDo(ctx, http.MethodDelete, "/"+target, nil, nil)
		}
	case "postgres":
		if isSink {
			_, err = e.pg.Exec(ctx, "DROP VIEW IF EXISTS "+pgx.Identifier{target + "_live"}.Sanitize())
			if err == nil {
				_, err = e.pg.Exec(ctx, "DELETE FROM productstream_sink_generations WHERE name = $1", target)
			}
		}
		if err == nil {
			_, err = e.pg.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{target}.Sanitize())
		}
	case "redis":
		err = e.redisScan(ctx, target, func(keys []string) error { return e.rdb.Unlink(ctx, keys...).Err() })
	}
	if err != nil {
		e.log.Warn("could not drop a sink run's data", "kind", kind, "target", target, "err", err)
	}
}

// redisScan calls fn with the keys under prefix, page by page.
func (e *sinkEnv) redisScan(ctx context.Context, prefix string, fn func([]string) error) error {
	var cursor uint64
	for {
		keys, next, err := e.rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// receiver is the webhook sink's endpoint: a loopback HTTP server that
// reads each body and answers 204, as fast as it can.
type receiver struct {
	srv *http.Server
	url string
	n   atomic.Int64
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/hooks/catalog"}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) reset() { r.n.Store(0) }

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}
