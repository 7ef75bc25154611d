package main

// Freshness to OpenSearch: an edge, a transactional processor and an
// OpenSearch sink (in process, as `productstream sink` runs it) run
// together; every request is a new product, and for each the harness
// records when the edge answered 202, when the product's state record
// reached a read_committed consumer of products (what the sink reads), when
// the sink's write of it was answered (written: a bulk request OpenSearch
// acknowledged), and when a search of the sink's alias first found it
// (visible to readers).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
)

// sinkFreshResult is the freshness run to OpenSearch. Every slice is
// sorted and holds one figure per accepted product that got that far.
type sinkFreshResult struct {
	load     *loadResult
	accepted int
	onKafka  []time.Duration // 202 to the state record's arrival on products
	written  []time.Duration // 202 to the answer of the sink's bulk request that applied it
	visible  []time.Duration // 202 to a search of the alias finding it
	// kafkaToVisible is, per product, from the state record's arrival to
	// the search finding it: the sink's share, refresh included.
	kafkaToVisible []time.Duration
	polls          int
	pollErrs       int
	firstPollErr   string
}

// runFreshness runs the freshness run to OpenSearch.
func (e *sinkEnv) runFreshness(ctx context.Context) (*sinkFreshResult, error) {
	h := e.h
	prefix := h.runID + ".osfresh."
	edge, addr, err := h.startEdge(ctx, "osfresh-edge", prefix)
	if err != nil {
		return nil, err
	}
	defer edge.stop(30 * time.Second)
	p, _, err := h.startProcessor(ctx, "osfresh-processor", prefix, h.runID+"-osfresh", true, "")
	if err != nil {
		return nil, err
	}
	defer p.stop(30 * time.Second)

	name := "os-fresh"
	writer, alias, err := e.newSink(ctx, "opensearch", name)
	if err != nil {
		return nil, err
	}
	defer e.drop("opensearch", true, alias)
	defer writer.Close()
	written := &writeTimes{at: map[string]time.Time{}}
	w := recordWrites(writer, written)
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
		Name: name, Sink: w, Topic: prefix + "products", Group: h.runID + "-sink-" + name, DLQ: dlq,
		Client: append(kafka.ClientOptions(h.o.brokers, log), kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
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
	defer func() {
		stopRunner()
		<-ran
	}()
	select {
	case <-assigned:
	case err := <-ran:
		ran <- err // for the deferred wait
		return nil, fmt.Errorf("the OpenSearch sink stopped before its assignment: %v", err)
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("the OpenSearch sink got no assignment in 1m")
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	products, err := h.watchArrivals(ctx, prefix+"products")
	if err != nil {
		return nil, err
	}
	defer products.stop()
	accepted := newAcceptedSet()
	watch := e.watchSearch(ctx, alias, accepted)
	defer watch.stop()

	t := newTarget("edge", "http://"+addr+lisaPath, h.o.concurrency)
	defer t.close()
	load, err := runLoad(ctx, t, loadSpec{phase: "fresh to OpenSearch", rate: h.o.freshRate, duration: h.o.sinkFreshDuration, senders: h.o.concurrency,
		work: workload{mix: []mixPart{{h.o.size, 1}}, seed: h.o.seed, unique: true}, accepted: accepted.add}, nil)
	if err != nil {
		return nil, err
	}
	acc := accepted.snapshot()
	if _, err := waitUntil(ctx, time.Now().Add(10*h.o.maxDelay+h.o.sinkFreshLinger+30*time.Second), func() bool {
		return watch.visibleCount() >= len(acc)
	}); err != nil {
		return nil, err
	}
	watch.stop()

	res := &sinkFreshResult{load: load, accepted: len(acc)}
	watch.mu.Lock()
	defer watch.mu.Unlock()
	res.polls, res.pollErrs, res.firstPollErr = watch.polls, watch.errs, watch.firstErr
	wrote := written.snapshot()
	for k, at := range acc {
		a, onKafka := products.get(k)
		if onKafka {
			res.onKafka = append(res.onKafka, a.at.Sub(at))
		}
		if t, ok := wrote[k]; ok {
			res.written = append(res.written, t.Sub(at))
		}
		if t, ok := watch.visible[k]; ok {
			res.visible = append(res.visible, t.Sub(at))
			if onKafka {
				res.kafkaToVisible = append(res.kafkaToVisible, t.Sub(a.at))
			}
		}
	}
	for _, s := range [][]time.Duration{res.onKafka, res.written, res.visible, res.kafkaToVisible} {
		slices.Sort(s)
	}
	return res, nil
}

// searchWatch searches OpenSearch for the accepted products it has not
// found yet.
type searchWatch struct {
	mu       sync.Mutex
	visible  map[string]time.Time // when a search of the alias first found the key
	polls    int
	errs     int
	firstErr string
	stop     func() // idempotent
}

func (w *searchWatch) visibleCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.visible)
}

// maxPollIDs bounds the ids of one search.
const maxPollIDs = 1000

// watchSearch searches the alias, every -sink-fresh-poll, for the accepted
// products not found yet (an ids query, the alias's filter applied: what
// readers see, once a refresh made them searchable). A product's time is
// the arrival of the first answer that found it. (A realtime GET would find
// a product before it is searchable, and makes OpenSearch refresh its
// internal reader to do so: work readers never cause.)
func (e *sinkEnv) watchSearch(ctx context.Context, alias string, accepted *acceptedSet) *searchWatch {
	w := &searchWatch{visible: map[string]time.Time{}}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	url := strings.TrimRight(e.h.o.opensearchURL, "/") + "/" + alias + "/_search?filter_path=hits.hits._id"
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
			var pending []string
			acc := accepted.snapshot()
			w.mu.Lock()
			for k := range acc {
				if _, ok := w.visible[k]; !ok && len(pending) < maxPollIDs {
					pending = append(pending, k)
				}
			}
			w.mu.Unlock()
			if len(pending) == 0 {
				continue
			}
			found, at, err := e.pollIDs(cctx, url,
				map[string]any{"size": len(pending), "_source": false, "query": map[string]any{"ids": map[string]any{"values": pending}}},
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
			w.record(cctx, found, at, err)
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

// record notes the keys one search found, at its answer's arrival.
func (w *searchWatch) record(ctx context.Context, found []string, at time.Time, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			w.errs++
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
		}
		return
	}
	w.polls++
	for _, k := range found {
		if _, ok := w.visible[k]; !ok {
			w.visible[k] = at
		}
	}
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
