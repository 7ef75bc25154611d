package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// The end-to-end tests run a processor on kfake, an in-process Kafka. Most
// run in a synctest bubble on kfake's virtual network (virtualTest,
// bothModes): every client, the processor's own and its restores' included
// (Config.Dialer), reaches the broker through net.Pipe, so the bubble's
// clock jumps whenever they all wait. Quiet periods, max delays and
// restarts then take no wall-clock time, and the tests assert exact times.
// newEnv is the same on real TCP and the wall clock, for what measures
// wall-clock time (measure_test.go).

type env struct {
	t       *testing.T
	eos     bool // run processors in exactly-once mode
	cluster *kfake.Cluster
	names   topics.Names
	serde   *schemas.Serde
	client  *kgo.Client
	log     *slog.Logger
	// dial reaches the broker: kfake's virtual network, or nil for TCP.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// metrics count for every processor the env runs without Metrics of
	// its own.
	metrics *Metrics
	// opts started the broker; restartBroker starts it again with them.
	opts []kfake.Opt
}

// bothModes runs fn once per processor mode, each on virtual time
// (virtualTest).
func bothModes(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eos := range []bool{false, true} {
		name := "at-least-once"
		if eos {
			name = "exactly-once"
		}
		t.Run(name, func(t *testing.T) { virtualTest(t, eos, fn) })
	}
}

// virtualTest runs fn in a synctest bubble, on a fresh broker of its own on
// kfake's virtual network, with processors in exactly-once mode if eos.
// The fake schema registry is a real HTTP server, so the schemas are
// registered before the bubble; the serde needs no registry afterwards.
func virtualTest(t *testing.T, eos bool, fn func(t *testing.T, e *env)) {
	serde := newSerde(t, topics.For("t."))
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, serde, new(kfake.VirtualNetwork))
		e.eos = eos
		fn(t, e)
	})
}

// newEnv is a fresh broker on real TCP, for tests on the wall clock.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, newSerde(t, topics.For("t.")), nil)
}

// newEnvOn starts a broker with the topics of prefix "t." (3 partitions)
// on vn, or on real TCP if vn is nil, with the extra options. Call it
// inside the bubble for vn.
func newEnvOn(t *testing.T, serde *schemas.Serde, vn *kfake.VirtualNetwork, extra ...kfake.Opt) *env {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1)}, extra...)
	e := &env{t: t, names: topics.For("t."), serde: serde, log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: newMetrics()}
	if vn != nil {
		opts = append(opts, kfake.ListenFn(vn.Listen), kfake.Ports(9092))
		e.dial = refusedDial(vn.DialContext)
	}
	e.opts = opts
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	e.cluster = cluster
	// No linger: a change is on the broker when produce returns, so on
	// virtual time it is consumed at the instant it was received.
	e.client = e.newClient(kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0))
	t.Cleanup(e.client.Close)
	if err := topics.Ensure(context.Background(), kadm.NewClient(e.client), e.names, topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		t.Fatal(err)
	}
	return e
}

// newClient is a client of the broker, on its network, with opts.
func (e *env) newClient(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(e.cluster.ListenAddrs()...)}, opts...)
	if e.dial != nil {
		opts = append(opts, kgo.Dialer(e.dial))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// newSerde registers the schemas of names on a fake registry of its own.
// Once registered, the serde encodes and decodes without the registry.
func newSerde(t testing.TB, names topics.Names) *schemas.Serde {
	t.Helper()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	rcl, _ := sr.NewClient(sr.URLs(reg.URL()))
	serde := schemas.NewSerde(rcl)
	if err := serde.Register(context.Background(), names.ByKind()); err != nil {
		t.Fatal(err)
	}
	return serde
}

// start runs a processor until the test ends or stop is called.
func (e *env) start(quiet, maxDelay time.Duration) (stop func()) {
	e.t.Helper()
	return e.startWith(Config{QuietPeriod: quiet, MaxDelay: maxDelay})
}

// withDefaults completes a hand-built cfg with the defaults that package
// config applies to the settings New requires.
func withDefaults(cfg Config) Config {
	if cfg.MaxPendingKeys == 0 {
		cfg.MaxPendingKeys = config.DefaultMaxPendingKeys
	}
	if cfg.MaxJSONDepth == 0 {
		cfg.MaxJSONDepth = config.DefaultMaxJSONDepth
	}
	return cfg
}

// startWith runs a processor with cfg completed by the environment and
// the configuration defaults.
func (e *env) startWith(cfg Config) (stop func()) {
	e.t.Helper()
	_, stop = e.run(cfg)
	return stop
}

// run runs a processor with cfg completed by the environment (its group
// "g" unless cfg names one) and the configuration defaults, until the test
// ends or stop is called.
func (e *env) run(cfg Config) (p *Processor, stop func()) {
	e.t.Helper()
	p, _, stop = e.runWatched(cfg)
	return p, stop
}

// runWatched is run, with a channel closed once Run has returned.
func (e *env) runWatched(cfg Config) (p *Processor, exited <-chan struct{}, stop func()) {
	e.t.Helper()
	cfg.Brokers, cfg.Topics, cfg.Serde, cfg.Log, cfg.ExactlyOnce, cfg.Dialer = e.cluster.ListenAddrs(), e.names, e.serde, e.log, e.eos, e.dial
	if cfg.Group == "" {
		cfg.Group = "g"
	}
	if cfg.Metrics == nil {
		cfg.Metrics = e.metrics
	}
	p, err := New(withDefaults(cfg))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		done <- p.Run(ctx)
		close(ended)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("processor: %v", err)
		}
	}
	e.t.Cleanup(stop)
	return p, ended, stop
}

// startAssigned is start that returns once the processor owns every
// partition of changes, restored, and fetches them all: on virtual time,
// the changes produced next are consumed at the instant they are produced.
func (e *env) startAssigned(quiet, maxDelay time.Duration) (stop func()) {
	e.t.Helper()
	p, stop := e.run(Config{QuietPeriod: quiet, MaxDelay: maxDelay})
	e.waitAssigned(p, 3)
	e.waitFetching()
	return stop
}

// waitFetching produces to every partition of changes a change of a
// resource without a state topic, which the processor counts
// (no_state_topic) and otherwise ignores, and waits until it has consumed
// them. After an assignment, franz-go's first fetch can leave out a
// partition whose offset is still being validated, and takes it up only
// when that fetch returns: after FetchMaxWait (5 s) if nothing arrives on
// the others. Once every partition has delivered a record, every fetch
// includes them all.
func (e *env) waitFetching() {
	e.t.Helper()
	want := testutil.ToFloat64(e.metrics.changesNoState)
	for i, parts := 0, map[int32]bool{}; len(parts) < 3; i++ {
		r := e.produce(schemas.Change{EventID: "warm-up", Source: "s", Provider: "lisa", Namespace: "ns", EventType: "warm-up",
			Resource: "warm-up", ProductID: fmt.Sprintf("w%d", i), ReceivedAt: time.Now(), Raw: "{}"})
		parts[r.Partition] = true
		want++
	}
	e.waitFor("the warm-up changes to be consumed", func() bool { return testutil.ToFloat64(e.metrics.changesNoState) >= want })
}

// onTime checks a time the processor kept. On virtual time it is exact,
// with one exception: franz-go (v1.22.2) now and then sends a
// transaction's first batch to a partition with the sequence of the
// producer epoch before the last EndTxn (seen under the race detector's
// scheduling), the broker refuses it (OUT_OF_ORDER_SEQUENCE_NUMBER), and
// the processor aborts, restores from what was committed and reads the
// changes again, once the fetch in flight returns (kgo's FetchMaxWait, 5 s).
// Nothing is lost or applied twice, which the tests check either way, but
// the times are then late: logged, not failed.
func (e *env) onTime(what string, got, want time.Duration) {
	e.t.Helper()
	switch aborted := e.aborted(); {
	case got == want:
	case aborted > 0 && got > want:
		e.t.Logf("%s: %s, want %s: late after %d aborted transaction(s)", what, got, want, aborted)
	default:
		e.t.Errorf("%s: %s, want %s", what, got, want)
	}
}

// aborted is how many transactions the env's processors aborted.
func (e *env) aborted() int {
	return int(testutil.ToFloat64(e.metrics.transactions.WithLabelValues("aborted")))
}

// waitAssigned waits until p owns n partitions of changes.
func (e *env) waitAssigned(p *Processor, n int) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("the processor to own %d partitions", n), func() bool { return p.Assigned() == n })
}

// waitFor waits until cond holds, checking every millisecond, for at most
// 30 s.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("waited 30s for %s", what)
		}
	}
}

func (e *env) change(id string, fields schemas.Fields, deleted bool) *kgo.Record {
	e.t.Helper()
	raw := fmt.Sprintf(`{"productId":%q}`, id)
	if fields.Title != nil {
		raw = fmt.Sprintf(`{"productId":%q,"title":%q}`, id, *fields.Title)
	}
	return e.produce(schemas.Change{EventID: "e", Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: id, Deleted: deleted, ReceivedAt: time.Now(), Fields: fields, Raw: raw})
}

// produce writes ch to the changes topic and returns the record as written.
func (e *env) produce(ch schemas.Change) *kgo.Record {
	e.t.Helper()
	v, err := e.serde.EncodeChange(&ch)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := e.client.ProduceSync(context.Background(), &kgo.Record{Topic: e.names.Changes, Key: []byte(ch.Key()), Value: v}).First()
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// reader is a read_committed client that reads topic from the start.
func (e *env) reader(topic string) *kgo.Client {
	e.t.Helper()
	// A short FetchMaxWait: a partition left out of a fetch (see
	// waitFetching) is taken up within it, well inside any read's wait.
	return e.newClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond))
}

// read consumes topic from the start until want records arrived or the wait ends.
func (e *env) read(topic string, want int, wait time.Duration) []*kgo.Record {
	e.t.Helper()
	cl := e.reader(topic)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	return out
}

func (e *env) updates(recs []*kgo.Record) []schemas.Update {
	e.t.Helper()
	var out []schemas.Update
	for _, r := range recs {
		u, err := e.serde.DecodeUpdate(context.Background(), r.Value)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func str(s string) *string { return &s }

// Five changes within the quiet period give one update standing for five,
// emitted exactly one quiet period after the last of them, and one state
// record holding the merged fields.
func TestBurstCollapsesIntoOneUpdate(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const quiet = time.Second
		e.startAssigned(quiet, 10*time.Second)
		e.change("p1", schemas.Fields{Title: str("first")}, false)
		for range 3 {
			time.Sleep(100 * time.Millisecond)
			e.change("p1", schemas.Fields{}, false)
		}
		time.Sleep(100 * time.Millisecond)
		e.change("p1", schemas.Fields{Price: str("9.99")}, false)
		ups := e.updates(e.read(e.names.Updates, 1, 15*time.Second))
		if len(ups) != 1 || ups[0].ChangeCount != 5 || ups[0].State == nil {
			t.Fatalf("want one update of 5 changes, got %+v", ups)
		}
		e.onTime("update after the last change", ups[0].EmittedAt.Sub(ups[0].LastReceivedAt), quiet)
		e.onTime("last change after the first", ups[0].LastReceivedAt.Sub(ups[0].FirstReceivedAt), 400*time.Millisecond)
		st := ups[0].State
		if *st.Fields.Title != "first" || *st.Fields.Price != "9.99" || st.ChangeCount != 5 || st.Version != ups[0].Version {
			t.Fatalf("merged state wrong: %+v", st)
		}
		// Nothing more arrives: the burst produced exactly one update.
		if more := e.read(e.names.Updates, 2, time.Minute); len(more) != 1 {
			t.Fatalf("want exactly 1 update, got %d", len(more))
		}
		prods := e.read(e.names.Products, 2, time.Minute)
		if len(prods) != 1 || string(prods[0].Key) != "ns:p1" {
			t.Fatalf("products: %d records", len(prods))
		}
	})
}

// A product changed every 300 ms, never quiet for its 500 ms quiet period,
// still gets an update exactly max_delay after the first change each one
// stands for, and every change is counted once. (Every 300 ms, no change
// lands on the instant a deadline passes, which would make the update it
// joins a matter of scheduling.)
func TestHotProductUpdatedEveryMaxDelay(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const (
			maxDelay = time.Second
			period   = 300 * time.Millisecond
			sent     = 12 // 3.3 s of changes: three updates of four
		)
		e.startAssigned(500*time.Millisecond, maxDelay)
		for range sent {
			e.change("hot", schemas.Fields{}, false)
			time.Sleep(period)
		}
		ups := e.updates(e.read(e.names.Updates, sent+1, time.Minute))
		total := 0
		for i, u := range ups {
			total += int(u.ChangeCount)
			e.onTime(fmt.Sprintf("update %d after its first change", i), u.EmittedAt.Sub(u.FirstReceivedAt), maxDelay)
		}
		if total != sent {
			t.Fatalf("%d updates stand for %d changes, want %d", len(ups), total, sent)
		}
		if e.aborted() == 0 {
			if len(ups) != 3 {
				t.Fatalf("%d updates, want 3 of 4 changes", len(ups))
			}
			for i := 1; i < len(ups); i++ {
				if gap := ups[i].EmittedAt.Sub(ups[i-1].EmittedAt); gap != 4*period {
					t.Errorf("%s between updates %d and %d, want %s", gap, i-1, i, 4*period)
				}
			}
		}
	})
}

// A delete writes a tombstone at once, without waiting for the quiet period.
func TestDeleteWritesTombstoneAtOnce(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.startAssigned(time.Hour, time.Hour)
		e.change("gone", schemas.Fields{Title: str("x")}, false)
		time.Sleep(time.Minute)
		e.change("gone", schemas.Fields{}, true)
		prods := e.read(e.names.Products, 1, 10*time.Second)
		if len(prods) != 1 || prods[0].Value != nil {
			t.Fatalf("want one tombstone, got %d records", len(prods))
		}
		ups := e.updates(e.read(e.names.Updates, 1, 5*time.Second))
		if len(ups) != 1 || !ups[0].Deleted || ups[0].State != nil || ups[0].ChangeCount != 2 {
			t.Fatalf("want a delete update of 2 changes, got %+v", ups)
		}
		e.onTime("update after the delete", ups[0].EmittedAt.Sub(ups[0].LastReceivedAt), 0)
	})
}

// After a restart the state is restored from the products topic: later
// changes merge into it, nothing already applied is applied again, and a
// change after the restart comes out after its quiet period as before.
func TestRestartRestoresStateAndSkipsApplied(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const quiet = 200 * time.Millisecond
		stop := e.startAssigned(quiet, time.Second)
		e.change("p", schemas.Fields{Title: str("kept")}, false)
		e.change("p", schemas.Fields{}, false)
		if ups := e.updates(e.read(e.names.Updates, 1, 10*time.Second)); len(ups) != 1 || ups[0].ChangeCount != 2 {
			t.Fatalf("first run: %+v", ups)
		}
		stop()
		e.startAssigned(quiet, time.Second)
		e.change("p", schemas.Fields{Price: str("5")}, false)
		ups := e.updates(e.read(e.names.Updates, 3, 10*time.Second))
		if len(ups) != 2 {
			t.Fatalf("want 2 updates, got %d", len(ups))
		}
		st := ups[1].State
		if ups[1].ChangeCount != 1 || st.ChangeCount != 3 || *st.Fields.Title != "kept" || *st.Fields.Price != "5" {
			t.Fatalf("after restart: update %+v state %+v", ups[1], st)
		}
		e.onTime("update after the change after the restart", ups[1].EmittedAt.Sub(ups[1].LastReceivedAt), quiet)
	})
}

// Committed offsets never pass a change whose product has not been written,
// while changes written after it are committed.
func TestCommitNeverPassesBufferedChange(t *testing.T) {
	virtualTest(t, false, func(t *testing.T, e *env) {
		e.startAssigned(time.Hour, time.Hour)
		slow := e.change("slow", schemas.Fields{Title: str("buffered")}, false)
		var after *kgo.Record
		for i := 0; after == nil || after.Partition != slow.Partition; i++ {
			after = e.change(fmt.Sprintf("gone-%d", i), schemas.Fields{}, true) // a delete: written at once
		}
		adm := kadm.NewClient(e.client)
		deadline := time.Now().Add(10 * time.Second)
		for {
			offs, err := adm.FetchOffsets(context.Background(), "g")
			if err != nil {
				t.Fatal(err)
			}
			committed := map[int32]int64{}
			offs.Each(func(o kadm.OffsetResponse) { committed[o.Partition] = o.At })
			if c, ok := committed[slow.Partition]; ok && c > slow.Offset {
				t.Fatalf("committed %d on partition %d, past the buffered change at %d", c, slow.Partition, slow.Offset)
			}
			if len(committed) > 0 && time.Now().After(deadline.Add(-8*time.Second)) {
				return // commits happened for the written deletes, none past "slow"
			}
			if time.Now().After(deadline) {
				t.Fatal("nothing was committed for the written deletes")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// A record that cannot be decoded lands on the DLQ with its error and
// origin, and the changes after it are still processed.
func TestPoisonRecordGoesToDLQ(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(100*time.Millisecond, time.Second)
		poison, err := e.client.ProduceSync(context.Background(), &kgo.Record{Topic: e.names.Changes, Key: []byte("ns:bad"), Value: []byte("not avro")}).First()
		if err != nil {
			t.Fatal(err)
		}
		e.change("good", schemas.Fields{Title: str("after the poison")}, false)
		if ups := e.updates(e.read(e.names.Updates, 1, 10*time.Second)); len(ups) != 1 || ups[0].ProductID != "good" {
			t.Fatalf("processing did not go on past the poison record: %+v", ups)
		}
		dlq := e.read(e.names.DLQ, 1, 10*time.Second)
		if len(dlq) != 1 || string(dlq[0].Value) != "not avro" {
			t.Fatalf("DLQ holds %d records", len(dlq))
		}
		h := map[string]string{}
		for _, kv := range dlq[0].Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h["dlq-origin-topic"] != e.names.Changes || h["dlq-origin-partition"] != fmt.Sprint(poison.Partition) ||
			h["dlq-origin-offset"] != fmt.Sprint(poison.Offset) || h["dlq-error"] == "" {
			t.Fatalf("DLQ headers do not name the origin: %v", h)
		}
	})
}

// Past max_pending_keys, keys are flushed early instead of growing memory.
func TestMaxPendingKeysFlushesEarly(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.startWith(Config{QuietPeriod: time.Hour, MaxDelay: time.Hour, MaxPendingKeys: 2})
		for i := range 5 {
			e.change(fmt.Sprintf("k%d", i), schemas.Fields{}, false)
		}
		if got := e.read(e.names.Updates, 3, 10*time.Second); len(got) < 3 {
			t.Fatalf("%d updates with 5 keys and max_pending_keys 2, want at least 3", len(got))
		}
	})
}

// Exactly once, a restart keeps the pending buffer: changes buffered when
// the processor stopped are emitted by the next one, counted once, and
// their quiet period runs on across the restart instead of starting over.
func TestExactlyOnceRestartKeepsPendingBuffer(t *testing.T) {
	virtualTest(t, true, func(t *testing.T, e *env) {
		const quiet = 3 * time.Second
		stop := e.startAssigned(quiet, 20*time.Second)
		e.change("p", schemas.Fields{Title: str("one")}, false)
		// Apart, so that each is consumed the instant it is produced: the
		// first transaction waits ~9 ms for franz-go to load the changelog's
		// metadata, and a change produced meanwhile is consumed after it.
		time.Sleep(100 * time.Millisecond)
		e.change("p", schemas.Fields{Price: str("2")}, false)
		time.Sleep(500 * time.Millisecond) // consumed and in the changelog, not yet due
		stop()
		if got := e.read(e.names.Updates, 1, time.Second); len(got) != 0 {
			t.Fatalf("a stop flushed the buffer early: %d updates", len(got))
		}
		e.startAssigned(quiet, 20*time.Second)
		ups := e.updates(e.read(e.names.Updates, 2, time.Minute))
		if len(ups) != 1 || ups[0].ChangeCount != 2 || *ups[0].State.Fields.Title != "one" || *ups[0].State.Fields.Price != "2" || ups[0].State.ChangeCount != 2 {
			t.Fatalf("want exactly one update of both buffered changes after the restart, got %+v", ups)
		}
		e.onTime("update after the last change", ups[0].EmittedAt.Sub(ups[0].LastReceivedAt), quiet)
	})
}

// lockedBuffer is a log sink that goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Exactly once, the flush of keys that came due while nothing new was
// polled commits a transaction without consumer offsets. It must not take
// GroupTransactSession.End's 500 ms pause for such transactions, which would
// stall the next cycle after every flush of an idle processor: each change,
// produced right after the previous update, comes out exactly one quiet
// period later.
func TestExactlyOnceIdleFlushDoesNotPause(t *testing.T) {
	virtualTest(t, true, func(t *testing.T, e *env) {
		var logs lockedBuffer
		e.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		const quiet = 50 * time.Millisecond
		e.startAssigned(quiet, time.Second)
		for i := range 3 {
			id := fmt.Sprintf("idle-%d", i)
			e.change(id, schemas.Fields{Title: str("t")}, false)
			// The change is polled and committed first; its update comes in a
			// later cycle that polls nothing.
			ups := e.updates(e.read(e.names.Updates, i+1, 10*time.Second))
			if len(ups) != i+1 || ups[i].ProductID != id {
				t.Fatalf("after %s, updates %+v", id, ups)
			}
			e.onTime(id+"'s update after its change", ups[i].EmittedAt.Sub(ups[i].LastReceivedAt), quiet)
		}
		out := logs.String()
		if !strings.Contains(out, "transaction without consumer offsets") {
			t.Fatalf("no flush of an idle processor committed without offsets; log:\n%s", out)
		}
		if strings.Contains(out, "sleeping 500ms") {
			t.Fatalf("a transaction paused 500 ms after committing; log:\n%s", out)
		}
	})
}

// With CommitInterval, a steady trickle of changes (one every 20 ms for
// 3 s, each a product of its own) costs one transaction per interval, not
// one or two per change, and every change is still written, no later than
// the interval after its quiet period. The same trickle without it takes a
// transaction per poll.
func TestCommitIntervalPacesTransactions(t *testing.T) {
	const (
		quiet    = 100 * time.Millisecond
		interval = 500 * time.Millisecond
		n        = 150
	)
	trickle := func(t *testing.T, e *env, every time.Duration) (committed int, ups []schemas.Update) {
		e.startWith(Config{QuietPeriod: quiet, MaxDelay: time.Second, CommitInterval: every})
		e.waitFetching()
		before := testutil.ToFloat64(e.metrics.transactions.WithLabelValues("committed"))
		for i := range n {
			e.change(fmt.Sprintf("trickle-%d", i), schemas.Fields{Title: str("t")}, false)
			time.Sleep(20 * time.Millisecond)
		}
		ups = e.updates(e.read(e.names.Updates, n, time.Minute))
		if len(ups) != n {
			t.Fatalf("%d updates of %d changes", len(ups), n)
		}
		return int(testutil.ToFloat64(e.metrics.transactions.WithLabelValues("committed")) - before), ups
	}
	virtualTest(t, true, func(t *testing.T, e *env) {
		committed, ups := trickle(t, e, interval)
		// 3 s of changes and their last quiet period, one transaction per
		// interval at most.
		if most := int((n*20*time.Millisecond+quiet)/interval) + 2; committed > most {
			t.Errorf("%d transactions committed, want at most %d (one per %s)", committed, most, interval)
		}
		for _, u := range ups {
			if late := u.EmittedAt.Sub(u.LastReceivedAt); late < quiet || late > quiet+interval {
				t.Errorf("%s written %s after its change, want %s to %s", u.ProductID, late, quiet, quiet+interval)
			}
		}
		if e.aborted() > 0 {
			t.Errorf("%d transactions aborted", e.aborted())
		}
	})
	virtualTest(t, true, func(t *testing.T, e *env) {
		committed, ups := trickle(t, e, 0)
		if committed < n {
			t.Errorf("without an interval, %d transactions committed for %d changes, want one per poll at least", committed, n)
		}
		for _, u := range ups {
			e.onTime(u.ProductID+"'s update after its change", u.EmittedAt.Sub(u.LastReceivedAt), quiet)
		}
	})
}

// New refuses a Config without a required setting, naming the field: the
// defaults of MaxPendingKeys and MaxJSONDepth live in package config alone.
func TestNewNamesTheMissingField(t *testing.T) {
	valid := func() Config {
		return Config{Brokers: []string{"127.0.0.1:9"}, Topics: topics.For("t."), Group: "g", QuietPeriod: time.Second,
			MaxDelay: time.Second, Serde: schemas.NewSerde(nil), MaxPendingKeys: 1, MaxJSONDepth: 1}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Brokers"},
		{"no serde", func(c *Config) { c.Serde = nil }, "Serde"},
		{"no group", func(c *Config) { c.Group = "" }, "Group"},
		{"zero quiet period", func(c *Config) { c.QuietPeriod = 0 }, "QuietPeriod"},
		{"max delay under the quiet period", func(c *Config) { c.MaxDelay = time.Millisecond }, "MaxDelay"},
		{"zero max pending keys", func(c *Config) { c.MaxPendingKeys = 0 }, "MaxPendingKeys"},
		{"negative max pending keys", func(c *Config) { c.MaxPendingKeys = -1 }, "MaxPendingKeys"},
		{"zero max JSON depth", func(c *Config) { c.MaxJSONDepth = 0 }, "MaxJSONDepth"},
		{"negative dedupe memory", func(c *Config) { c.DedupeEventIDs = -1 }, "DedupeEventIDs"},
		{"negative commit interval", func(c *Config) { c.CommitInterval = -time.Millisecond }, "CommitInterval"},
		{"compression that is no codec", func(c *Config) { c.Compression = kafka.Compression(200) }, "Compression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.edit(&cfg)
			p, err := New(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				if p != nil {
					p.client.Close()
				}
				t.Fatalf("New: %v, want a *ConfigError for %s", err, tc.field)
			}
		})
	}
}

// A processor stopped while it starts (its context ended before the
// pending changelog is in place) stops cleanly: Run returns nil.
func TestRunStoppedWhileStartingIsClean(t *testing.T) {
	e := newEnv(t)
	p, err := New(withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "starting", QuietPeriod: time.Second,
		MaxDelay: time.Second, Serde: e.serde, Log: e.log, ExactlyOnce: true, Dialer: e.dial}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run stopped while starting: %v, want nil", err)
	}
}
