// Command bench is productstream's load harness (issue 6). In one run, on one
// broker and with the same request bodies, it measures the real ingest edge
// and the real processor, each as a separate process, beside the simplest
// alternatives a user could write:
//
//   - B1: a bare net/http handler that reads the body and answers 202;
//   - B2: the fifty-line handler: read, HMAC-verify, franz-go ProduceSync of
//     the raw bytes (acks=all), 202;
//   - B3: a franz-go consume-then-produce passthrough of the same changes
//     (and, for restores, a plain consumer of the same state topic);
//   - B4-<kind>: for each sink (OpenSearch, PostgreSQL, Redis, webhook), a
//     plain franz-go consumer of the same products topic doing only the bare
//     write of the same documents, batch for batch (bare.go, sinks.go).
//
// It also measures freshness from a 202 to the product's update on Kafka and
// to the product being visible to the readers of every sink (sinkfresh.go),
// and the start-up of `productstream process` and the takeover of a killed
// member's partitions (startup.go).
//
// By default every client is plaintext; with -config FILE, the kafka and
// schema_registry sections of a productstream configuration (TLS, SASL,
// registry credentials) secure every client of the run and are written into
// the configurations of the productstream processes it starts
// (security.go).
//
// It writes integration/bench/RESULTS.md (see -out) with every figure beside
// its baseline as a ratio, and the targets of issue 6 and of the sinks issue
// with pass or miss.
//
//	go run ./integration/bench                  # needs PRODUCTSTREAM_KAFKA_BROKERS and _SCHEMA_REGISTRY_URL,
//	                                            # and for the sinks PRODUCTSTREAM_POSTGRES_DSN, _REDIS_ADDR, _OPENSEARCH_URL
//	bash integration/bench/run.sh               # starts a real Kafka and registry on its own ports, and the sink backends, first
//	bash integration/bench/run.sh -sections sinks -out /tmp/sinks.md   # the sinks alone
//	bash integration/bench/run.sh -sections sinkfresh,startup          # freshness to the sinks, start-up and takeover
//
// B1, B2 and B3 run as this same program re-executed with the hidden flag
// -serve (b1, b2, b3-passthrough, b3-consume); see servers.go. The sinks and
// B4 run in this process, one at a time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/productstream/productstream/config"
)

// options are the harness settings; every one has a flag.
type options struct {
	brokers    []string
	registry   string
	configPath string   // -config: a productstream configuration whose kafka and schema_registry sections secure every connection
	svc        services // how every client of the run reaches Kafka and the registry
	out        string
	workDir    string
	bin        string // a prebuilt productstream binary; empty: build ./cmd/productstream
	brokerDir  string // realbroker.sh state dir: Kafka's pid and version
	keepTopics bool

	warmup        time.Duration
	duration      time.Duration // closed-loop 1 KB phase
	mixedDuration time.Duration
	openDuration  time.Duration
	concurrency   int
	rounds        int // each ingest phase is split into rounds rotating through the servers

	size     int       // headline body size
	mix      []mixPart // mixed-run body sizes and weights
	keys     uint64
	zipfS    float64
	seed     uint64
	parts    int32
	b2Linger time.Duration

	procMinChanges int
	procMaxChanges int
	procRounds     int
	procMaxValue   int
	quietPeriod    time.Duration
	commitInterval time.Duration // processor.commit_interval of every processor the harness runs
	maxDelay       time.Duration
	pollEvery      time.Duration
	restoreRecords int // the restore's products topic holds at least this many records

	freshDuration time.Duration
	freshRate     float64

	coalescerMemory bool // run processor's TestCoalescerMemoryPerPendingKey at the end
	profile         bool // profile an extra processor run in each mode, and an extra run of each sink below its target

	// The sinks section.
	postgresDSN        string
	redisAddr          string
	opensearchURL      string
	sinkKinds          []string
	sinkRecords        int
	sinkRounds         int
	sinkBatch          int
	sinkLinger         time.Duration
	webhookConcurrency int
	sinkFreshDuration  time.Duration
	sinkFreshLinger    time.Duration
	sinkFreshPoll      time.Duration
	sinkFreshRates     []float64
	sinkFreshRefresh   time.Duration // the OpenSearch sink's refresh_interval in the freshness runs; 0: OpenSearch's default

	startupLaunches int
	sessionTimeout  time.Duration // processor.session_timeout of the takeover's members; 0: the configuration's default

	sections map[string]bool // ingest, processor, fresh, sinks, sinkfresh, startup
	command  string          // shown in RESULTS.md
}

// allSections are the parts of a run, in order; processor needs ingest.
var allSections = []string{"ingest", "processor", "fresh", "sinks", "sinkfresh", "startup"}

// allSinkKinds are the sinks the sinks section measures, in order.
var allSinkKinds = []string{"opensearch", "postgres", "redis", "webhook"}

// mixPart is one body size of a mix and its weight.
type mixPart struct {
	size   int
	weight int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		os.Exit(childMain(os.Args[1:]))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Print(summary(res))
	fmt.Printf("\nwrote %s\n", o.out)
}

// parseFlags reads the harness flags; brokers and registry default to the
// environment variables the integration suite reads.
func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &options{}
	brokers := fs.String("brokers", os.Getenv("PRODUCTSTREAM_KAFKA_BROKERS"), "Kafka seed brokers, comma-separated (default $PRODUCTSTREAM_KAFKA_BROKERS)")
	fs.StringVar(&o.registry, "registry", os.Getenv("PRODUCTSTREAM_SCHEMA_REGISTRY_URL"), "Confluent-API schema registry URL (default $PRODUCTSTREAM_SCHEMA_REGISTRY_URL)")
	fs.StringVar(&o.configPath, "config", "", "a productstream configuration file whose kafka and schema_registry sections (brokers, URL, TLS, SASL, registry credentials) every client of the run, and every productstream process it starts, uses; the other sections are ignored (default: plaintext to -brokers and -registry)")
	fs.StringVar(&o.out, "out", "", "results file (default integration/bench/RESULTS.md in the module)")
	fs.StringVar(&o.workDir, "workdir", "", "directory for the binary, configs and process logs (default: a new temp dir, removed on success)")
	fs.StringVar(&o.bin, "bin", "", "use this productstream binary (e.g. one built with pprof) instead of building ./cmd/productstream")
	fs.StringVar(&o.brokerDir, "broker-dir", os.Getenv("REALBROKER_DIR"), "realbroker.sh state dir, to find Kafka's pid and version (default $REALBROKER_DIR)")
	fs.BoolVar(&o.keepTopics, "keep-topics", false, "keep the run's topics and schema subjects (default: delete them at the end)")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "closed-loop warm-up of each server before the measurements; also the warm-up, at its rate, of each freshness run to the sinks")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "closed-loop 1 KB phase (maximum throughput) per server, over all rounds")
	fs.DurationVar(&o.mixedDuration, "mixed-duration", 10*time.Second, "closed-loop mixed-body phase per server, over all rounds")
	fs.DurationVar(&o.openDuration, "open-duration", 10*time.Second, "open-loop phase at half of the edge's maximum, per server, over all rounds")
	fs.IntVar(&o.rounds, "rounds", 2, "split each ingest phase into this many rounds, rotating through the servers")
	fs.IntVar(&o.concurrency, "concurrency", 64, "keep-alive connections (closed loop) and senders (open loop)")
	fs.IntVar(&o.size, "size", 1024, "body size in bytes of the headline (1 KB) phases")
	mix := fs.String("mix", "1024:90,16384:9,196608:1", "mixed-run body sizes in bytes and their weights")
	fs.Uint64Var(&o.keys, "keys", 100_000, "product ids; drawn from a Zipf distribution (a few hot products, a long tail)")
	fs.Float64Var(&o.zipfS, "zipf-s", 1.1, "Zipf exponent s (> 1; larger: hotter hot products)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed of the product ids and prices")
	parts := fs.Int("partitions", 12, "partitions of every topic the run creates")
	fs.DurationVar(&o.b2Linger, "b2-linger", 0, "B2's producer linger (the edge uses 0; franz-go's default is 10ms)")
	fs.IntVar(&o.procMinChanges, "proc-min-changes", 100_000, "processor input: the edge's 1 KB changes, repeated until there are at least this many")
	fs.IntVar(&o.procMaxChanges, "proc-max-changes", 200_000, "processor input: at most this many of the edge's changes (the first ones)")
	fs.IntVar(&o.procRounds, "proc-rounds", 2, "runs of B3 and of the processor in each mode, in alternating order, summed")
	fs.IntVar(&o.procMaxValue, "proc-max-value", 4096, "processor input: only the edge's changes whose value is at most this many bytes (the 1 KB bodies)")
	fs.DurationVar(&o.quietPeriod, "quiet-period", 100*time.Millisecond, "processor.quiet_period of the processor runs")
	fs.DurationVar(&o.commitInterval, "commit-interval", config.DefaultCommitInterval, "processor.commit_interval of every processor the harness runs (exactly once: the shortest time between two transactions' starts; 0: one per poll)")
	fs.DurationVar(&o.maxDelay, "max-delay", time.Second, "processor.max_delay of the processor runs")
	fs.DurationVar(&o.pollEvery, "poll", 50*time.Millisecond, "how often the processor's committed offsets are polled")
	fs.IntVar(&o.restoreRecords, "restore-records", 200_000, "restore input: the transactional run's state records, copied with unique keys onto a products topic of its own until it holds at least this many")
	fs.DurationVar(&o.freshDuration, "fresh-duration", 10*time.Second, "open-loop phase of the end-to-end freshness run")
	fs.Float64Var(&o.freshRate, "fresh-rate", 200, "offered req/s of the freshness run (each request a new product)")
	fs.BoolVar(&o.coalescerMemory, "coalescer-memory", true, "at the end of a run with the processor section, measure the coalescer's bytes per pending key with `go test -run '^TestCoalescerMemoryPerPendingKey$' ./processor/`")
	fs.BoolVar(&o.profile, "profile", true, "after the measured processor runs, run the processor once more in each mode with ops.listen set, take CPU profiles of the whole run, and report where the CPU goes; likewise run once more, profiled, each sink below its target; and profile B2 and the edge in a closed-loop phase of their own after the ingest phases")
	fs.StringVar(&o.postgresDSN, "postgres-dsn", os.Getenv("PRODUCTSTREAM_POSTGRES_DSN"), "sinks: PostgreSQL DSN (default $PRODUCTSTREAM_POSTGRES_DSN; integration/backends/backends.sh env)")
	fs.StringVar(&o.redisAddr, "redis-addr", os.Getenv("PRODUCTSTREAM_REDIS_ADDR"), "sinks: Redis host:port (default $PRODUCTSTREAM_REDIS_ADDR)")
	fs.StringVar(&o.opensearchURL, "opensearch-url", os.Getenv("PRODUCTSTREAM_OPENSEARCH_URL"), "sinks: OpenSearch URL (default $PRODUCTSTREAM_OPENSEARCH_URL)")
	sinkKinds := fs.String("sink-kinds", strings.Join(allSinkKinds, ","), "sinks measured beside their bare write: opensearch, postgres, redis, webhook")
	fs.IntVar(&o.sinkRecords, "sink-records", 15_000, "sinks input: products sent once each through the edge and the processor; the products topic every sink and baseline reads holds their state records")
	fs.IntVar(&o.sinkRounds, "sink-rounds", 4, "runs of each sink and of its baseline, in alternating order (baseline, sink, sink, baseline, ...); the target is checked on the median round of each, so more, shorter rounds let a burst of other work on the machine move it less")
	fs.IntVar(&o.sinkBatch, "sink-batch", config.DefaultSinkBatchRecords, "sinks' batch.max_records, and the most records a baseline writes at once")
	fs.DurationVar(&o.sinkLinger, "sink-linger", 0, "sinks' batch.linger in the throughput runs (a baseline writes what one poll returns)")
	fs.IntVar(&o.webhookConcurrency, "webhook-concurrency", config.DefaultWebhookParallel, "webhook sink's concurrency, and its baseline's")
	fs.DurationVar(&o.sinkFreshDuration, "sink-fresh-duration", 10*time.Second, "open-loop phase of each freshness run to the sinks (one per -sink-fresh-rates)")
	sinkFreshRates := fs.String("sink-fresh-rates", "200,2000", "offered req/s of the freshness runs to the sinks (each request a new product), comma-separated; the target is checked at the first")
	fs.DurationVar(&o.sinkFreshLinger, "sink-fresh-linger", config.DefaultSinkLinger, "sinks' batch.linger in the freshness runs (default: the configuration's default)")
	fs.DurationVar(&o.sinkFreshPoll, "sink-fresh-poll", 20*time.Millisecond, "how often the freshness runs ask OpenSearch, PostgreSQL and Redis for the products not yet visible")
	fs.DurationVar(&o.sinkFreshRefresh, "sink-fresh-os-refresh", 0, "the OpenSearch sink's refresh_interval in the freshness runs (default: unset, OpenSearch's own 1s)")
	fs.IntVar(&o.startupLaunches, "startup-launches", 5, "startup: launches of `productstream process` timed from start to consuming every partition (after one more that creates the topics)")
	fs.DurationVar(&o.sessionTimeout, "takeover-session-timeout", 0, "startup: processor.session_timeout of the dynamic takeover's members (default: the configuration's default, 45s)")
	sections := fs.String("sections", strings.Join(allSections, ","), "parts to run: ingest, processor (needs ingest), fresh, sinks, sinkfresh (freshness to every sink), startup (start-up and takeover of the processor) (e.g. -sections sinks to rerun the sinks alone); RESULTS.md is complete only with all")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		if s = strings.TrimSpace(s); !slices.Contains(allSections, s) {
			return nil, fmt.Errorf("-sections: unknown section %q (want %v)", s, allSections)
		}
		o.sections[s] = true
	}
	if o.sections["processor"] && !o.sections["ingest"] {
		return nil, errors.New("-sections: processor reads what the ingest section produced: add ingest")
	}
	for _, k := range strings.Split(*sinkKinds, ",") {
		if k = strings.TrimSpace(k); !slices.Contains(allSinkKinds, k) {
			return nil, fmt.Errorf("-sink-kinds: unknown sink %q (want %v)", k, allSinkKinds)
		}
		if !slices.Contains(o.sinkKinds, k) {
			o.sinkKinds = append(o.sinkKinds, k)
		}
	}
	for _, f := range strings.Split(*sinkFreshRates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("-sink-fresh-rates: %q is not a positive rate", f)
		}
		o.sinkFreshRates = append(o.sinkFreshRates, v)
	}
	if o.startupLaunches < 1 {
		return nil, errors.New("-startup-launches must be at least 1")
	}
	if o.sections["sinks"] || o.sections["sinkfresh"] {
		if err := o.checkSinks(); err != nil {
			return nil, err
		}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.brokers = append(o.brokers, b)
		}
	}
	var err error
	if o.svc, o.brokers, o.registry, err = loadServices(o.configPath, o.brokers, o.registry); err != nil {
		return nil, err
	}
	if o.mix, err = parseMix(*mix); err != nil {
		return nil, fmt.Errorf("-mix: %w", err)
	}
	o.parts = int32(*parts)
	o.command = commandLine(args)
	switch {
	case len(o.brokers) == 0:
		return nil, errors.New("no brokers: set -brokers or PRODUCTSTREAM_KAFKA_BROKERS (or use integration/bench/run.sh)")
	case o.registry == "":
		return nil, errors.New("no registry: set -registry or PRODUCTSTREAM_SCHEMA_REGISTRY_URL")
	case o.concurrency < 1:
		return nil, errors.New("-concurrency must be at least 1")
	case o.zipfS <= 1:
		return nil, errors.New("-zipf-s must be greater than 1")
	case o.keys < 1:
		return nil, errors.New("-keys must be at least 1")
	case o.parts < 1:
		return nil, errors.New("-partitions must be at least 1")
	case o.size < 64:
		return nil, errors.New("-size must be at least 64 bytes")
	case o.procMinChanges < 1 || o.procMaxChanges < 1:
		return nil, errors.New("-proc-min-changes and -proc-max-changes must be positive")
	case o.restoreRecords < 1:
		return nil, errors.New("-restore-records must be positive")
	case o.freshRate <= 0:
		return nil, errors.New("-fresh-rate must be positive")
	case o.commitInterval < 0 || o.commitInterval > config.MaxCommitInterval:
		return nil, fmt.Errorf("-commit-interval must be between 0 and %s", config.MaxCommitInterval)
	case o.quietPeriod <= 0 || o.maxDelay < o.quietPeriod:
		return nil, errors.New("want 0 < -quiet-period <= -max-delay")
	}
	return o, nil
}

// checkSinks checks the settings of the sinks section: every backend
// measured has an address.
func (o *options) checkSinks() error {
	need := map[string]struct{ value, flag, env string }{
		"opensearch": {o.opensearchURL, "-opensearch-url", "PRODUCTSTREAM_OPENSEARCH_URL"},
		"postgres":   {o.postgresDSN, "-postgres-dsn", "PRODUCTSTREAM_POSTGRES_DSN"},
		"redis":      {o.redisAddr, "-redis-addr", "PRODUCTSTREAM_REDIS_ADDR"},
	}
	// The sinks' environment asks OpenSearch for its version whatever
	// sinks are measured.
	for _, k := range append([]string{"opensearch"}, o.sinkKinds...) {
		if n, ok := need[k]; ok && n.value == "" {
			return fmt.Errorf("sinks: no %s backend: set %s or %s (`eval \"$(bash integration/backends/backends.sh env)\"`, or use integration/bench/run.sh)", k, n.flag, n.env)
		}
	}
	switch {
	case o.sinkRecords < 1:
		return errors.New("-sink-records must be positive")
	case o.sinkBatch < 1:
		return errors.New("-sink-batch must be positive")
	case o.webhookConcurrency < 1:
		return errors.New("-webhook-concurrency must be positive")
	case o.sinkLinger < 0 || o.sinkFreshLinger < 0:
		return errors.New("-sink-linger and -sink-fresh-linger must not be negative")
	case o.sinkFreshDuration <= 0 || o.sinkFreshPoll <= 0:
		return errors.New("-sink-fresh-duration and -sink-fresh-poll must be positive")
	}
	return nil
}

// parseMix reads "size:weight,size:weight,...".
func parseMix(s string) ([]mixPart, error) {
	var out []mixPart
	for _, f := range strings.Split(s, ",") {
		size, weight, ok := strings.Cut(strings.TrimSpace(f), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not size:weight", f)
		}
		sz, err := strconv.Atoi(size)
		if err != nil || sz < 64 {
			return nil, fmt.Errorf("size %q: want an integer of at least 64", size)
		}
		w, err := strconv.Atoi(weight)
		if err != nil || w < 1 {
			return nil, fmt.Errorf("weight %q: want a positive integer", weight)
		}
		out = append(out, mixPart{size: sz, weight: w})
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// commandLine is the command shown in RESULTS.md: the one run.sh says it
// ran ($BENCH_COMMAND), else `go run ./integration/bench` with these flags.
func commandLine(args []string) string {
	if c := os.Getenv("BENCH_COMMAND"); c != "" {
		return c
	}
	quoted := make([]string, 0, len(args)+1)
	quoted = append(quoted, "go run ./integration/bench")
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted = append(quoted, a)
	}
	return strings.Join(quoted, " ")
}
