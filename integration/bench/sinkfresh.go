package main

// Freshness to the sinks: an edge, a transactional processor and one sink
// of each kind measured (in process, as `productstream sink` runs it, each
// in a consumer group of its own) run together, at each of
// -sink-fresh-rates; every request is a new product. For each product the
// harness records when the edge answered 202, the timestamp of its state
// record on products (when the processor produced it, inside its
// transaction), when that record reached a read_committed consumer of
// products (what the sinks read: the transaction committed), when each
// sink's write of it was answered, and when it was first visible to a
// reader of each sink: found by a search of the OpenSearch alias, a SELECT
// of the PostgreSQL view, an HGET of the Redis hash, or received by the
// webhook endpoint.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
)

// freshTarget is the sinks' freshness target at the lower rate: a
// product visible to a reader of every sink within this of its 202, at
// the 99th percentile.
const freshTarget = time.Second

// sinkFreshResult is one freshness run to the sinks, at one rate. Every
// slice is sorted and holds one figure per accepted product that got that
// far.
type sinkFreshResult struct {
	rate     float64
	load     *loadResult
	accepted int
	produced []time.Duration // 202 to the state record's timestamp (the processor produced it)
	onKafka  []time.Duration // 202 to the state record's arrival on products, read_committed
	sinks    []*sinkFreshness
}

// sinkFreshness is one sink's part of a freshness run.
type sinkFreshness struct {
	kind    string
	written []time.Duration // 202 to the answer of the sink's write that applied it
	visible []time.Duration // 202 to a reader first seeing it
	// kafkaToVisible is, per product, from the state record's arrival on
	// products to a reader first seeing it: the sink's share.
	kafkaToVisible []time.Duration
	polls          int
	pollErrs       int
	firstPollErr   string
}

// sink returns kind's part of the run, nil when not measured.
func (r *sinkFreshResult) sink(kind string) *sinkFreshness {
	if r == nil {
		return nil
	}
	for _, s := range r.sinks {
		if s.kind == kind {
			return s
		}
	}
	return nil
}

// freshSink is one sink running in a freshness run.
type freshSink struct {
	kind    string
	written *writeTimes
	watch   *visWatch
	stop    func() // stops the runner, closes the writer, drops what it wrote
}

// runFreshness runs the freshness run to the sinks at rate.
func (e *sinkEnv) runFreshness(ctx context.Context, rate float64) (*sinkFreshResult, error) {
	h := e.h
	tag := fmt.Sprintf("fresh%d", int(rate))
	prefix := h.runID + "." + tag + "."
	edge, addr, err := h.startEdge(ctx, tag+"-edge", prefix)
	if err != nil {
		return nil, err
	}
	defer edge.stop(30 * time.Second)
	p, _, err := h.startProcessor(ctx, tag+"-processor", prefix, h.runID+"-"+tag, true, "")
	if err != nil {
		return nil, err
	}
	defer p.stop(30 * time.Second)

	var sinks []*freshSink
	defer func() {
		for _, s := range sinks {
			s.stop()
		}
	}()
	for _, kind := range h.o.sinkKinds {
		s, err := e.startFreshSink(ctx, kind, tag+"-"+kind, prefix)
		if err != nil {
			return nil, fmt.Errorf("%s sink: %w", kind, err)
		}
		sinks = append(sinks, s)
	}

	products, err := h.watchArrivals(ctx, prefix+"products")
	if err != nil {
		return nil, err
	}
	defer products.stop()
	accepted := newAcceptedSet()
	onAccepted := func(id string, at time.Time) {
		accepted.add(id, at)
		for _, s := range sinks {
			s.watch.expect(benchNamespace + ":" + id)
		}
	}

	t := newTarget("edge", "http://"+addr+lisaPath, h.o.concurrency)
	defer t.close()
	// A warm-up at the same rate, of products of its own that nothing
	// watches: the measured products meet a pipeline already running, not
	// the first transaction, connections and fetches of every part.
	if h.o.warmup > 0 {
		if _, err := runLoad(ctx, t, loadSpec{phase: "warm-up to the sinks", rate: rate, duration: h.o.warmup, senders: h.o.concurrency,
			work: workload{mix: []mixPart{{h.o.size, 1}}, seed: h.o.seed, unique: true, prefix: "w"}}, nil); err != nil {
			return nil, err
		}
	}
	load, err := runLoad(ctx, t, loadSpec{phase: "fresh to the sinks", rate: rate, duration: h.o.sinkFreshDuration, senders: h.o.concurrency,
		work: workload{mix: []mixPart{{h.o.size, 1}}, seed: h.o.seed, unique: true}, accepted: onAccepted}, nil)
	if err != nil {
		return nil, err
	}
	acc := accepted.snapshot()
	if _, err := waitUntil(ctx, time.Now().Add(10*h.o.maxDelay+h.o.sinkFreshLinger+30*time.Second), func() bool {
		for _, s := range sinks {
			if s.watch.visibleCount() < len(acc) {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, err
	}

	res := &sinkFreshResult{rate: rate, load: load, accepted: len(acc)}
	for _, s := range sinks {
		s.watch.stop()
		f := &sinkFreshness{kind: s.kind}
		s.watch.mu.Lock()
		f.polls, f.pollErrs, f.firstPollErr = s.watch.polls, s.watch.errs, s.watch.firstErr
		visible := s.watch.visible
		s.watch.mu.Unlock()
		wrote := s.written.snapshot()
		for k, at := range acc {
			if w, ok := wrote[k]; ok {
				f.written = append(f.written, w.Sub(at))
			}
			if v, ok := visible[k]; ok {
				f.visible = append(f.visible, v.Sub(at))
				if a, ok := products.get(k); ok {
					f.kafkaToVisible = append(f.kafkaToVisible, v.Sub(a.at))
				}
			}
		}
		for _, d := range [][]time.Duration{f.written, f.visible, f.kafkaToVisible} {
			slices.Sort(d)
		}
		res.sinks = append(res.sinks, f)
	}
	for k, at := range acc {
		if a, ok := products.get(k); ok {
			res.onKafka = append(res.onKafka, a.at.Sub(at))
			res.produced = append(res.produced, a.produced.Sub(at))
		}
	}
	slices.Sort(res.onKafka)
	slices.Sort(res.produced)
	return res, nil
}

// startFreshSink starts kind's sink on prefix's products topic, with its
// write times noted, and a watch of what its readers see; it returns once
// the sink's group has its partitions.
func (e *sinkEnv) startFreshSink(ctx context.Context, kind, name, prefix string) (_ *freshSink, err error) {
	h := e.h
	var cleanups []func()
	fs := &freshSink{kind: kind, written: &writeTimes{at: map[string]time.Time{}}}
	fs.stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		cleanups = nil
	}
	defer func() {
		if err != nil {
			fs.stop()
		}
	}()
	var writer sink.Sink
	var target string
	if kind == "webhook" {
		fs.watch = newVisWatch()
		hook, herr := startFreshReceiver(fs.watch)
		if herr != nil {
			return nil, herr
		}
		cleanups = append(cleanups, hook.close)
		writer, err = e.newWebhook(ctx, hook.url, name)
	} else if kind == "opensearch" {
		writer, target, err = e.newOpenSearch(ctx, name, h.o.sinkFreshRefresh)
	} else {
		writer, target, err = e.newSink(ctx, kind, name)
	}
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() {
		if kind != "webhook" {
			e.drop(kind, true, target)
		}
	}, func() { _ = writer.Close() })
	dlq := prefix + "sink." + name + ".dlq"
	if err := h.createTopic(ctx, dlq); err != nil {
		return nil, err
	}
	m, err := sink.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	assigned := make(chan struct{})
	var once sync.Once
	log := e.log.With("sink", name)
	runner, err := sink.NewRunner(sink.Config{
		Name: name, Sink: recordWrites(writer, fs.written), Topic: prefix + "products", Group: h.runID + "-sink-" + name, DLQ: dlq,
		Client: h.o.svc.clientOptions(log, kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(func() { close(assigned) })
		})),
		MaxRecords: h.o.sinkBatch, MaxBytes: config.DefaultSinkBatchBytes, Linger: h.o.sinkFreshLinger,
		RetryInitial: config.DefaultSinkRetryInitial, RetryMax: config.DefaultSinkRetryMax,
		Decoder: schemas.NewSerde(h.reg), Metrics: m, Log: log,
	})
	if err != nil {
		return nil, err
	}
	rctx, stopRunner := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- runner.Run(rctx) }()
	cleanups = append(cleanups, func() {
		stopRunner()
		<-ran
	})
	select {
	case <-assigned:
	case err := <-ran:
		ran <- err // for the cleanup's wait
		return nil, fmt.Errorf("the sink stopped before its assignment: %v", err)
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("the sink got no assignment in 1m")
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	switch kind {
	case "opensearch":
		fs.watch = e.watchVisible(ctx, e.searchProbe(target))
	case "postgres":
		fs.watch = e.watchVisible(ctx, e.selectProbe(target))
	case "redis":
		fs.watch = e.watchVisible(ctx, e.hgetProbe(target))
	}
	cleanups = append(cleanups, fs.watch.stop)
	return fs, nil
}

// visWatch is when a reader of one sink first saw each product: a poller
// asks the backend, every -sink-fresh-poll, for the products expected and
// not seen yet (the webhook receiver notes them as they arrive instead).
type visWatch struct {
	mu       sync.Mutex
	pending  map[string]struct{} // expected, not seen yet
	visible  map[string]time.Time
	polls    int
	errs     int
	firstErr string
	stop     func() // idempotent
}

func newVisWatch() *visWatch {
	return &visWatch{pending: map[string]struct{}{}, visible: map[string]time.Time{}, stop: func() {}}
}

// expect adds a key to look for (the edge accepted it).
func (w *visWatch) expect(key string) {
	w.mu.Lock()
	if _, ok := w.visible[key]; !ok {
		w.pending[key] = struct{}{}
	}
	w.mu.Unlock()
}

func (w *visWatch) visibleCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.visible)
}

// seen notes keys a reader saw at at (their first time only).
func (w *visWatch) seen(keys []string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		if _, ok := w.visible[k]; !ok {
			w.visible[k] = at
			delete(w.pending, k)
		}
	}
}

// maxPollIDs bounds the keys of one probe.
const maxPollIDs = 1000

// probe asks a backend which of keys a reader sees; at is the arrival of
// the answer.
type probe func(ctx context.Context, keys []string) (found []string, at time.Time, err error)

// watchVisible probes the backend every -sink-fresh-poll for the keys
// expected and not seen yet, maxPollIDs at a time. A key's time is the
// arrival of the first answer that found it: up to one poll interval, plus
// the probe's own time, late.
func (e *sinkEnv) watchVisible(ctx context.Context, p probe) *visWatch {
	w := newVisWatch()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(e.h.o.sinkFreshPoll)
		defer tick.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			w.mu.Lock()
			pending := make([]string, 0, len(w.pending))
			for k := range w.pending {
				pending = append(pending, k)
			}
			w.mu.Unlock()
			for len(pending) > 0 && cctx.Err() == nil {
				chunk := pending[:min(len(pending), maxPollIDs)]
				pending = pending[len(chunk):]
				found, at, err := p(cctx, chunk)
				w.record(cctx, found, at, err)
			}
		}
	}()
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	return w
}

// record notes what one probe found, or its failure.
func (w *visWatch) record(ctx context.Context, found []string, at time.Time, err error) {
	if err != nil {
		w.mu.Lock()
		if ctx.Err() == nil {
			w.errs++
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
		}
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	w.polls++
	w.mu.Unlock()
	w.seen(found, at)
}

// searchProbe searches the OpenSearch alias for keys: an ids query, the
// alias's filter applied, which finds what readers see once a refresh made
// it searchable. (A realtime GET would find a product before it is
// searchable, and makes OpenSearch refresh its internal reader to do so:
// work readers never cause.)
func (e *sinkEnv) searchProbe(alias string) probe {
	url := strings.TrimRight(e.h.o.opensearchURL, "/") + "/" + alias + "/_search?filter_path=hits.hits._id"
	return func(ctx context.Context, keys []string) ([]string, time.Time, error) {
		return e.pollIDs(ctx, url,
			map[string]any{"size": len(keys), "_source": false, "query": map[string]any{"ids": map[string]any{"values": keys}}},
			func(b []byte) ([]string, error) {
				var r struct {
					Hits struct {
						Hits []struct {
							ID string `json:"_id"`
						} `json:"hits"`
					} `json:"hits"`
				}
				var ids []string
				err := json.Unmarshal(b, &r)
				for _, h := range r.Hits.Hits {
					ids = append(ids, h.ID)
				}
				return ids, err
			})
	}
}

// selectProbe selects keys from the view readers query, <table>_live.
func (e *sinkEnv) selectProbe(table string) probe {
	q := "SELECT key FROM " + pgx.Identifier{table + "_live"}.Sanitize() + " WHERE key = ANY($1)"
	return func(ctx context.Context, keys []string) ([]string, time.Time, error) {
		rows, err := e.pg.Query(ctx, q, keys)
		if err != nil {
			return nil, time.Time{}, err
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		return found, time.Now(), err
	}
}

// hgetProbe reads the version field of each key's hash of generation 1
// (the key prefix, then the key), in one pipeline.
func (e *sinkEnv) hgetProbe(prefix string) probe {
	return func(ctx context.Context, keys []string) ([]string, time.Time, error) {
		cmds := make([]*goredis.StringCmd, len(keys))
		_, err := e.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGet(ctx, prefix+k, "version")
			}
			return nil
		})
		at := time.Now()
		if err != nil && err != goredis.Nil {
			return nil, at, err
		}
		var found []string
		for i, c := range cmds {
			if c.Err() == nil {
				found = append(found, keys[i])
			}
		}
		return found, at, nil
	}
}

// freshReceiver is the webhook sink's endpoint in a freshness run: it
// notes when each key's first request arrived (the key is its
// Idempotency-Key, "<key>:<version>") and answers 204.
type freshReceiver struct {
	srv   *http.Server
	url   string
	watch *visWatch
}

func startFreshReceiver(watch *visWatch) (*freshReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	r := &freshReceiver{url: "http://" + ln.Addr().String() + "/hooks/catalog", watch: watch}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		at := time.Now()
		if i := strings.LastIndexByte(req.Header.Get("Idempotency-Key"), ':'); i > 0 {
			r.watch.seen([]string{req.Header.Get("Idempotency-Key")[:i]}, at)
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *freshReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// pollIDs posts body to url and reads the ids found from the answer.
func (e *sinkEnv) pollIDs(ctx context.Context, url string, body any, ids func([]byte) ([]string, error)) ([]string, time.Time, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.osHTTP.Do(req)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(resp.Body)
	at := time.Now()
	if err != nil {
		return nil, at, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, at, fmt.Errorf("%s: %s", resp.Status, truncate(string(ans), 200))
	}
	found, err := ids(ans)
	return found, at, err
}

// writeTimes is when the sink's writes applied each key.
type writeTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (t *writeTimes) snapshot() map[string]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]time.Time, len(t.at))
	for k, v := range t.at {
		out[k] = v
	}
	return out
}

// recordWrites wraps s so that every Write notes when it applied each key
// (its first time), and changes nothing else: a sink.Generations stays one,
// so the runner writes through At as it does to the real sink.
func recordWrites(s sink.Sink, times *writeTimes) sink.Sink {
	r := recordingSink{Sink: s, times: times}
	if g, ok := s.(sink.Generations); ok {
		return recordingGenerations{recordingSink: r, gens: g}
	}
	return r
}

type recordingSink struct {
	sink.Sink
	times *writeTimes
}

func (s recordingSink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	res, err := s.Sink.Write(ctx, batch)
	if err != nil {
		return res, err
	}
	now := time.Now()
	s.times.mu.Lock()
	for i, r := range res {
		if _, ok := s.times.at[batch[i].Key]; !ok && r.Outcome == sink.Applied {
			s.times.at[batch[i].Key] = now
		}
	}
	s.times.mu.Unlock()
	return res, nil
}

type recordingGenerations struct {
	recordingSink
	gens sink.Generations
}

func (g recordingGenerations) Generations(ctx context.Context) (int, int, error) {
	return g.gens.Generations(ctx)
}
func (g recordingGenerations) Begin(ctx context.Context, n int) error  { return g.gens.Begin(ctx, n) }
func (g recordingGenerations) Switch(ctx context.Context, n int) error { return g.gens.Switch(ctx, n) }
func (g recordingGenerations) Drop(ctx context.Context, n int) error   { return g.gens.Drop(ctx, n) }
func (g recordingGenerations) At(n int) sink.Sink {
	return recordingSink{Sink: g.gens.At(n), times: g.times}
}
