package main

// The processor side: the edge's 1 KB changes are copied into fresh topic
// prefixes, then B3 (a franz-go passthrough) and `productstream process`
// (transactions off, then on) consume them; the state records the
// transactional run built are copied, with unique keys, onto a products
// topic of its own until it holds -restore-records, and a new processor
// group restores it, beside B3's plain consumer of the same topic; and a
// short run of edge plus processor measures freshness, from a request's 202
// to its product's first update.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// procInput is the input every processor measurement reads: the same
// records, on the same partitions, in each copy.
type procInput struct {
	edgeRecords int64           // records on the edge's changes topic
	small       int64           // of those, the 1 KB-body changes copied (at most -proc-max-changes)
	rounds      int             // times they were copied into each input
	n           int64           // changes per input topic
	valueBytes  int64           // value bytes per input topic
	ends        map[int32]int64 // end offset of each input partition
}

// procResult is one processor (or B3) throughput measurement.
type procResult struct {
	name       string
	changes    int64
	elapsed    time.Duration // assignment to every input offset committed
	allEmitted time.Duration // assignment to the last update a change is counted in, summed over rounds (0: not measured)
	rounds     int
	updates    int64   // records on updates
	counted    int64   // sum of change_count over updates
	cpu        float64 // CPU seconds of the measured process over elapsed
	kafkaCPU   float64 // NaN when Kafka's pid is unknown
}

// merge adds another round of the same measurement.
func (r *procResult) merge(o *procResult) *procResult {
	switch {
	case o == nil:
		return r
	case r == nil:
		o.rounds = 1
		return o
	}
	r.changes += o.changes
	r.elapsed += o.elapsed
	r.allEmitted += o.allEmitted
	r.updates += o.updates
	r.counted += o.counted
	r.cpu += o.cpu
	r.kafkaCPU += o.kafkaCPU
	r.rounds++
	return r
}

// meanEmitted is the mean time until every update was written.
func (r *procResult) meanEmitted() time.Duration {
	if r == nil || r.rounds == 0 {
		return 0
	}
	return r.allEmitted / time.Duration(r.rounds)
}

func (r *procResult) rate() float64 {
	if r == nil || r.elapsed <= 0 {
		return 0
	}
	return float64(r.changes) / r.elapsed.Seconds()
}

// coalesce is changes per update.
func (r *procResult) coalesce() float64 {
	if r == nil || r.updates == 0 {
		return 0
	}
	return float64(r.changes) / float64(r.updates)
}

func (r *procResult) cpuPer1000() float64 {
	if r == nil || r.changes == 0 {
		return 0
	}
	return r.cpu / float64(r.changes) * 1000
}

// restoreResult is what a processor logged about restoring its partitions.
type restoreResult struct {
	records int64
	took    time.Duration
	logged  float64 // records_per_s as logged (the sum over the log lines)
	lines   int
}

func (r *restoreResult) rate() float64 {
	if r == nil || r.took <= 0 {
		return 0
	}
	return float64(r.records) / r.took.Seconds()
}

// restoreInput is the products topic the restore reads: the transactional
// run's state records, copied until there are at least -restore-records.
type restoreInput struct {
	source     int64 // committed state records on the transactional run's products topic
	copies     int   // times each of them was copied
	records    int64 // records on the restore's products topic: source × copies
	valueBytes int64 // value bytes on the restore's products topic
}

// freshResult is the end-to-end freshness run.
type freshResult struct {
	load     *loadResult
	accepted int
	seen     int             // accepted products whose update arrived
	lat      []time.Duration // update arrival minus 202, sorted
	produced []time.Duration // update record timestamp (when the processor produced it) minus 202, sorted
}

// prepareInput copies the 1 KB-body changes of the edge's changes topic (at
// most o.procMaxValue bytes of value) into each dest changes topic, same
// partition, same order, repeated until each holds at least o.procMinChanges.
func (h *harness) prepareInput(ctx context.Context, from string, dests []string) (*procInput, error) {
	in := &procInput{}
	var keep []*kgo.Record
	err := h.readAll(ctx, from, func(r *kgo.Record) {
		in.edgeRecords++
		if len(r.Value) <= h.o.procMaxValue && len(keep) < h.o.procMaxChanges {
			keep = append(keep, r)
		}
	})
	if err != nil {
		return nil, err
	}
	in.small = int64(len(keep))
	if in.small == 0 {
		return nil, fmt.Errorf("%s holds no change of at most %d bytes", from, h.o.procMaxValue)
	}
	in.rounds = max(1, int(math.Ceil(float64(h.o.procMinChanges)/float64(in.small))))
	for _, d := range dests {
		if err := h.createTopic(ctx, d); err != nil {
			return nil, err
		}
	}
	w, err := h.newCopier()
	if err != nil {
		return nil, err
	}
	defer w.cl.Close()
	for range in.rounds {
		for _, r := range keep {
			for _, d := range dests {
				w.write(ctx, &kgo.Record{Topic: d, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers})
			}
			in.valueBytes += int64(len(r.Value))
		}
	}
	if err := w.flush(ctx); err != nil {
		return nil, fmt.Errorf("copy changes: %w", err)
	}
	in.n = in.small * int64(in.rounds)
	dends, err := h.adm.ListEndOffsets(ctx, dests[0])
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", dests[0], err)
	}
	in.ends = map[int32]int64{}
	var total int64
	dends.Each(func(o kadm.ListedOffset) {
		in.ends[o.Partition] = o.Offset
		total += o.Offset
	})
	if total != in.n {
		return nil, fmt.Errorf("%s holds %d records, want %d", dests[0], total, in.n)
	}
	return in, nil
}

// readAll reads every partition of topic from the start to its last stable
// offset (committed records only), calling fn for each record.
func (h *harness) readAll(ctx context.Context, topic string, fn func(*kgo.Record)) error {
	_, err := kafka.ReadToEnd(ctx, h.o.svc.opts(), []string{topic},
		func(r *kgo.Record) error {
			fn(r)
			return nil
		},
		kafka.WithTimeout(5*time.Minute), kafka.WithIdleEnd(0))
	return err
}

// copier writes copies of records to the partitions set on them, with
// acks=all and the edge's compression, without waiting for each; flush
// waits for all and reports every failure.
type copier struct {
	cl  *kgo.Client
	mu  sync.Mutex
	err error
}

func (h *harness) newCopier() (*copier, error) {
	cl, err := kgo.NewClient(h.o.svc.opts(kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000), edgeCompression())...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &copier{cl: cl}, nil
}

func (c *copier) write(ctx context.Context, r *kgo.Record) {
	c.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			c.mu.Lock()
			c.err = errors.Join(c.err, err)
			c.mu.Unlock()
		}
	})
}

func (c *copier) flush(ctx context.Context) error {
	if err := c.cl.Flush(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// createTopic creates topic with the run's partition count.
func (h *harness) createTopic(ctx context.Context, topic string) error {
	return h.createTopicWith(ctx, topic, nil)
}

// createTopicWith creates topic with the run's partition count and configs.
func (h *harness) createTopicWith(ctx context.Context, topic string, configs map[string]*string) error {
	resp, err := h.adm.CreateTopic(ctx, h.o.parts, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// runB3 runs the passthrough baseline as a separate process over topic.
func (h *harness) runB3(ctx context.Context, in *procInput, topic string, round int) (*procResult, error) {
	out := fmt.Sprintf("%s.b3-out%d", h.runID, round+1)
	if err := h.createTopic(ctx, out); err != nil {
		return nil, err
	}
	k0, err := h.kafkaCPU()
	if err != nil {
		return nil, err
	}
	r, err := runChild(ctx, filepath.Join(h.work, fmt.Sprintf("b3-passthrough%d.log", round+1)),
		h.childArgs("b3-passthrough", "-topic", topic, "-out-topic", out,
			"-group", fmt.Sprintf("%s-b3-%d", h.runID, round+1), "-expect", strconv.FormatInt(in.n, 10))...)
	if err != nil {
		return nil, err
	}
	k1, err := h.kafkaCPU()
	if err != nil {
		return nil, err
	}
	// Kafka's CPU covers the child's whole life (start-up included).
	return &procResult{name: "B3 passthrough", changes: r.Records, elapsed: seconds(r.Seconds), cpu: r.CPUSeconds, kafkaCPU: k1 - k0}, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

var (
	assignedLine  = regexp.MustCompile(`msg="partitions assigned"`)
	partsField    = regexp.MustCompile(`partitions="?\[([0-9 ]*)\]"?`)
	restoredField = regexp.MustCompile(`restored_records=(\d+)`)
	tookField     = regexp.MustCompile(`took=(\S+)`)
	rpsField      = regexp.MustCompile(`records_per_s=(\d+)`)
)

// startProcessor starts `productstream process` on prefix and waits until
// the group has assigned it every partition (and it has restored them). It
// returns what its "partitions assigned" log lines said about the restore.
func (h *harness) startProcessor(ctx context.Context, name, prefix, group string, exactlyOnce bool, debug string) (*proc, *restoreResult, error) {
	return h.startProcessorEpoch(ctx, name, prefix, group, exactlyOnce, debug, 0)
}

// startProcessorEpoch is startProcessor with processor.version_epoch set
// to epoch.
func (h *harness) startProcessorEpoch(ctx context.Context, name, prefix, group string, exactlyOnce bool, debug string, epoch int) (*proc, *restoreResult, error) {
	cfg := filepath.Join(h.work, name+".yaml")
	err := writeConfig(cfg, psConfig{brokers: h.o.brokers, registry: h.o.registry, prefix: prefix, partitions: h.o.parts,
		listen: "127.0.0.1:0", maxBody: h.maxBody(), group: group, exactlyOnce: exactlyOnce, quiet: h.o.quietPeriod, maxDelay: h.o.maxDelay,
		commit: &h.o.commitInterval, debug: debug, epoch: epoch, svc: h.o.svc})
	if err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", cfg, err)
	}
	p, err := startProc(name, filepath.Join(h.work, name+".log"), assignedLine, h.bin, "process", "--config", cfg)
	if err != nil {
		return nil, nil, err
	}
	rr := &restoreResult{}
	got := map[int32]bool{}
	timeout := time.After(3 * time.Minute)
	for len(got) < int(h.o.parts) {
		select {
		case line := <-p.lines:
			if err := parseAssigned(line, rr, got); err != nil {
				p.stop(30 * time.Second)
				return nil, nil, fmt.Errorf("%s: %w", name, err)
			}
		case <-p.exited:
			return nil, nil, p.failed()
		case <-timeout:
			p.stop(30 * time.Second)
			return nil, nil, fmt.Errorf("%s: only %d of %d partitions assigned after 3m; log %s", name, len(got), h.o.parts, p.logPath)
		case <-ctx.Done():
			p.stop(30 * time.Second)
			return nil, nil, ctx.Err()
		}
	}
	return p, rr, nil
}

// parseAssigned adds one "partitions assigned" log line (slog text format)
// to rr and its partitions to got.
func parseAssigned(line string, rr *restoreResult, got map[int32]bool) error {
	m := partsField.FindStringSubmatch(line)
	r := restoredField.FindStringSubmatch(line)
	t := tookField.FindStringSubmatch(line)
	s := rpsField.FindStringSubmatch(line)
	if m == nil || r == nil || t == nil || s == nil {
		return fmt.Errorf("unexpected assignment log line %q", line)
	}
	for _, f := range strings.Fields(m[1]) {
		part, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return fmt.Errorf("partition %q in %q: %w", f, line, err)
		}
		got[int32(part)] = true
	}
	n, _ := strconv.ParseInt(r[1], 10, 64)
	took, err := time.ParseDuration(t[1])
	if err != nil {
		return fmt.Errorf("took in %q: %w", line, err)
	}
	rps, _ := strconv.ParseFloat(s[1], 64)
	rr.records += n
	rr.took += took
	rr.logged += rps
	rr.lines++
	return nil
}

// runProcessor measures `productstream process` over the input under prefix:
// from the assignment of every partition until the group's committed offsets
// reach the end of the input, then reads updates until every change is
// counted in one. With prof, it also takes CPU profiles of the processor
// for the whole run, through its ops.listen, into prof.files.
func (h *harness) runProcessor(ctx context.Context, name, prefix string, exactlyOnce bool, in *procInput, prof *profileResult) (*procResult, error) {
	group := h.runID + "-" + name
	var debug string
	if prof != nil {
		var err error
		if debug, err = h.ports.Addr(); err != nil {
			return nil, err
		}
	}
	p, _, err := h.startProcessor(ctx, name, prefix, group, exactlyOnce, debug)
	if err != nil {
		return nil, err
	}
	defer p.stop(30 * time.Second)
	if prof != nil {
		stop, profiled := make(chan struct{}), make(chan error, 1)
		go func() {
			var err error
			prof.files, err = cpuProfiles(ctx, debug, h.work, name, stop)
			profiled <- err
		}()
		defer func() {
			close(stop)
			if err := <-profiled; err != nil {
				h.log.Warn("CPU profile", "run", name, "err", err)
			}
		}()
	}
	start := time.Now()
	c0, k0, err := h.cpuOf(p.pid())
	if err != nil {
		return nil, err
	}
	changes := prefix + "changes"
	deadline := start.Add(10 * time.Minute)
	for {
		offs, err := h.adm.FetchOffsets(ctx, group)
		if err != nil {
			return nil, fmt.Errorf("%s: committed offsets: %w", name, err)
		}
		done := true
		for part, end := range in.ends {
			if o, ok := offs.Lookup(changes, part); end > 0 && (!ok || o.Err != nil || o.At < end) {
				done = false
				break
			}
		}
		if done {
			break
		}
		if err := p.failed(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: offsets not committed to the end after 10m; log %s", name, p.logPath)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(h.o.pollEvery):
		}
	}
	elapsed := time.Since(start)
	c1, k1, err := h.cpuOf(p.pid())
	if err != nil {
		return nil, err
	}
	res := &procResult{name: name, changes: in.n, elapsed: elapsed, cpu: c1 - c0, kafkaCPU: k1 - k0}
	last, err := h.countUpdates(ctx, prefix+"updates", in.n, res)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	res.allEmitted = last.Sub(start)
	return res, nil
}

// countUpdates reads topic (read_committed) from the start until the
// updates' change counts add up to want, filling res.updates and
// res.counted. It returns the latest record timestamp (when the processor
// produced it).
func (h *harness) countUpdates(ctx context.Context, topic string, want int64, res *procResult) (time.Time, error) {
	cl, err := kgo.NewClient(h.o.svc.opts(kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return time.Time{}, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute+10*h.o.maxDelay)
	defer cancel()
	var last time.Time
	var decodeErr error
	for res.counted < want {
		fetches := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return last, fmt.Errorf("updates count %d of %d changes: %w", res.counted, want, err)
		}
		if err := fetches.Err(); err != nil {
			return last, fmt.Errorf("read %s: %w", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			u, err := h.serde.DecodeUpdate(rctx, r.Value)
			if err != nil {
				decodeErr = err
				return
			}
			res.updates++
			res.counted += int64(u.ChangeCount)
			if r.Timestamp.After(last) {
				last = r.Timestamp
			}
		})
		if decodeErr != nil {
			return last, fmt.Errorf("decode update: %w", decodeErr)
		}
	}
	return last, nil
}

// buildRestoreInput reads every committed record of the products topic from
// (a transactional run's state) and writes copies of them to the products
// topic to, which it creates compacted like every state topic (topics.Ensure
// leaves an existing topic as it is), until to holds at least
// o.restoreRecords. Each copy keeps its record's value, headers (the
// "version" header lets the restore keep the value encoded) and partition;
// its key is the record's key with "#<copy>" appended, so that every copy
// is a product of its own. It returns once every write is acknowledged by
// all in-sync replicas and visible in the end offsets of to.
func (h *harness) buildRestoreInput(ctx context.Context, from, to string) (*restoreInput, error) {
	var state []*kgo.Record
	if err := h.readAll(ctx, from, func(r *kgo.Record) { state = append(state, r) }); err != nil {
		return nil, err
	}
	in := &restoreInput{source: int64(len(state))}
	if in.source == 0 {
		return nil, fmt.Errorf("%s holds no committed state record", from)
	}
	in.copies = max(1, int(math.Ceil(float64(h.o.restoreRecords)/float64(in.source))))
	if err := h.createTopicWith(ctx, to, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}); err != nil {
		return nil, err
	}
	w, err := h.newCopier()
	if err != nil {
		return nil, err
	}
	defer w.cl.Close()
	for c := 1; c <= in.copies; c++ {
		suffix := "#" + strconv.Itoa(c)
		for _, r := range state {
			key := make([]byte, 0, len(r.Key)+len(suffix))
			key = append(append(key, r.Key...), suffix...)
			w.write(ctx, &kgo.Record{Topic: to, Partition: r.Partition, Key: key, Value: r.Value, Headers: r.Headers})
			in.valueBytes += int64(len(r.Value))
		}
	}
	if err := w.flush(ctx); err != nil {
		return nil, fmt.Errorf("copy state records: %w", err)
	}
	in.records = in.source * int64(in.copies)
	// Every write is acknowledged; wait until the end offsets show them
	// all, so that B3 and the restore read the same, whole topic.
	var total int64
	for deadline := time.Now().Add(30 * time.Second); ; {
		dends, err := h.adm.ListEndOffsets(ctx, to)
		if err == nil {
			err = dends.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("end offsets of %s: %w", to, err)
		}
		total = 0
		dends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		if total >= in.records || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if total != in.records {
		return nil, fmt.Errorf("%s holds %d records, want %d", to, total, in.records)
	}
	return in, nil
}

// measureRestore times B3's plain consumer over prefix's products topic,
// then starts a new processor group on prefix, which restores that topic on
// assignment, and reads what it logged.
func (h *harness) measureRestore(ctx context.Context, prefix string) (*restoreResult, *childResult, error) {
	products := prefix + "products"
	b3, err := runChild(ctx, filepath.Join(h.work, "b3-consume.log"),
		h.childArgs("b3-consume", "-topic", products)...)
	if err != nil {
		return nil, nil, err
	}
	// The copied states carry the versions of the run that wrote them, but
	// the restore's changes topic is empty: for the processor that is a
	// changes topic re-created, which it accepts under a higher
	// processor.version_epoch (docs/processor.md).
	p, rr, err := h.startProcessorEpoch(ctx, "restore", prefix, h.runID+"-restore", true, "", 1)
	if err != nil {
		return nil, nil, err
	}
	p.stop(30 * time.Second)
	return rr, b3, nil
}

// runFreshness runs a second edge and a transactional processor on a fresh
// prefix, sends each product once at the freshness rate, and measures for
// each product the time from its 202 to the arrival of its first update
// (read_committed).
func (h *harness) runFreshness(ctx context.Context) (*freshResult, error) {
	prefix := h.runID + ".fresh."
	edge, addr, err := h.startEdge(ctx, "fresh-edge", prefix)
	if err != nil {
		return nil, err
	}
	defer edge.stop(30 * time.Second)
	p, _, err := h.startProcessor(ctx, "fresh-processor", prefix, h.runID+"-fresh", true, "")
	if err != nil {
		return nil, err
	}
	defer p.stop(30 * time.Second)

	updates, err := h.watchArrivals(ctx, prefix+"updates")
	if err != nil {
		return nil, err
	}
	defer updates.stop()

	accepted := newAcceptedSet()
	t := newTarget("edge", "http://"+addr+lisaPath, h.o.concurrency)
	defer t.close()
	load, err := runLoad(ctx, t, loadSpec{phase: "fresh", rate: h.o.freshRate, duration: h.o.freshDuration, senders: h.o.concurrency,
		work: workload{mix: []mixPart{{h.o.size, 1}}, seed: h.o.seed, unique: true}, accepted: accepted.add}, nil)
	if err != nil {
		return nil, err
	}
	// Wait for the updates: at most max_delay after the last change, plus
	// the transaction; give it generous slack on a noisy machine.
	acc := accepted.snapshot()
	if _, err := waitUntil(ctx, time.Now().Add(10*h.o.maxDelay+20*time.Second), func() bool {
		for k := range acc {
			if _, ok := updates.get(k); !ok {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, err
	}
	res := &freshResult{load: load, accepted: len(acc)}
	for k, at := range acc {
		if got, ok := updates.get(k); ok {
			res.seen++
			res.lat = append(res.lat, got.at.Sub(at))
			res.produced = append(res.produced, got.produced.Sub(at))
		}
	}
	slices.Sort(res.lat)
	slices.Sort(res.produced)
	return res, nil
}

// cpuOf reads the CPU seconds used so far by the process pid and by the
// broker.
func (h *harness) cpuOf(pid int) (proc, broker float64, err error) {
	if proc, err = procCPU(pid); err != nil {
		return 0, 0, err
	}
	if broker, err = h.kafkaCPU(); err != nil {
		return 0, 0, err
	}
	return proc, broker, nil
}
