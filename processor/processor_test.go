package processor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

type env struct {
	t       *testing.T
	eos     bool // run processors in exactly-once mode
	cluster *kfake.Cluster
	names   topics.Names
	serde   *schemas.Serde
	client  *kgo.Client
	log     *slog.Logger
}

// bothModes runs fn once per processor mode, each on a fresh broker.
func bothModes(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eos := range []bool{false, true} {
		name := "at-least-once"
		if eos {
			name = "exactly-once"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.eos = eos
			fn(t, e)
		})
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	rcl, _ := sr.NewClient(sr.URLs(reg.URL()))
	names := topics.For("t.")
	serde := schemas.NewSerde(rcl)
	if err := serde.Register(context.Background(), names.ByKind()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := topics.Ensure(context.Background(), kadm.NewClient(cl), names, topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cluster: cluster, names: names, serde: serde, client: cl, log: log}
}

// start runs a processor until the test ends or stop is called.
func (e *env) start(quiet, maxDelay time.Duration) (stop func()) {
	e.t.Helper()
	return e.startWith(Config{QuietPeriod: quiet, MaxDelay: maxDelay})
}

// startWith runs a processor with cfg completed by the environment.
func (e *env) startWith(cfg Config) (stop func()) {
	e.t.Helper()
	cfg.Brokers, cfg.Topics, cfg.Group, cfg.Serde, cfg.Log, cfg.ExactlyOnce = e.cluster.ListenAddrs(), e.names, "g", e.serde, e.log, e.eos
	p, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
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
	return stop
}

func (e *env) change(id string, fields schemas.Fields, deleted bool) *kgo.Record {
	e.t.Helper()
	raw := fmt.Sprintf(`{"productId":%q}`, id)
	if fields.Title != nil {
		raw = fmt.Sprintf(`{"productId":%q,"title":%q}`, id, *fields.Title)
	}
	ch := schemas.Change{EventID: "e", Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: id, Deleted: deleted, ReceivedAt: time.Now(), Fields: fields, Raw: raw}
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

// read consumes topic from the start until want records arrived or the wait ends.
func (e *env) read(topic string, want int, wait time.Duration) []*kgo.Record {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		e.t.Fatal(err)
	}
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
// and one state record holding the merged fields.
func TestBurstCollapsesIntoOneUpdate(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(time.Second, 10*time.Second)
		e.change("p1", schemas.Fields{Title: str("first")}, false)
		for range 3 {
			e.change("p1", schemas.Fields{}, false)
		}
		e.change("p1", schemas.Fields{Price: str("9.99")}, false)
		ups := e.updates(e.read(e.names.Updates, 1, 15*time.Second))
		if len(ups) != 1 || ups[0].ChangeCount != 5 || ups[0].State == nil {
			t.Fatalf("want one update of 5 changes, got %+v", ups)
		}
		st := ups[0].State
		if *st.Fields.Title != "first" || *st.Fields.Price != "9.99" || st.ChangeCount != 5 || st.Version != ups[0].Version {
			t.Fatalf("merged state wrong: %+v", st)
		}
		// Nothing more arrives: the burst produced exactly one update.
		if more := e.read(e.names.Updates, 2, 2*time.Second); len(more) != 1 {
			t.Fatalf("want exactly 1 update, got %d", len(more))
		}
		prods := e.read(e.names.Products, 1, 5*time.Second)
		if len(prods) != 1 || string(prods[0].Key) != "ns:p1" {
			t.Fatalf("products: %d records", len(prods))
		}
	})
}

// A product changed every 100 ms for longer than max_delay still gets
// updates, each covering at most max_delay of changes.
func TestHotProductUpdatedEveryMaxDelay(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const maxDelay = time.Second
		e.start(500*time.Millisecond, maxDelay)
		sent := 0
		for end := time.Now().Add(3500 * time.Millisecond); time.Now().Before(end); sent++ {
			e.change("hot", schemas.Fields{}, false)
			time.Sleep(100 * time.Millisecond)
		}
		recs := e.read(e.names.Updates, 100, 4*time.Second)
		ups := e.updates(recs)
		// A transaction that flushes without having consumed anything new
		// commits no offsets, so franz-go cannot tell that the broker has
		// KIP-447 and holds the next commit for 500 ms: in exactly-once
		// mode a hot key's updates can be up to that much further apart.
		tolerance := 300 * time.Millisecond
		if e.eos {
			tolerance += 500 * time.Millisecond
		}
		total := 0
		last := time.Time{}
		for _, u := range ups {
			total += int(u.ChangeCount)
			if !last.IsZero() {
				if gap := u.EmittedAt.Sub(last); gap > maxDelay+tolerance {
					t.Errorf("%s between updates of a hot product, over max_delay %s", gap, maxDelay)
				}
			}
			last = u.EmittedAt
		}
		if len(ups) < 3 {
			t.Fatalf("%d updates for 3.5 s of changes with max_delay 1s", len(ups))
		}
		if total != sent {
			t.Fatalf("updates stand for %d changes, %d were sent", total, sent)
		}
	})
}

// A delete writes a tombstone at once, without waiting for the quiet period.
func TestDeleteWritesTombstoneAtOnce(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(time.Hour, time.Hour)
		e.change("gone", schemas.Fields{Title: str("x")}, false)
		e.change("gone", schemas.Fields{}, true)
		prods := e.read(e.names.Products, 1, 10*time.Second)
		if len(prods) != 1 || prods[0].Value != nil {
			t.Fatalf("want one tombstone, got %d records", len(prods))
		}
		ups := e.updates(e.read(e.names.Updates, 1, 5*time.Second))
		if len(ups) != 1 || !ups[0].Deleted || ups[0].State != nil || ups[0].ChangeCount != 2 {
			t.Fatalf("want a delete update of 2 changes, got %+v", ups)
		}
	})
}

// After a restart the state is restored from the products topic: later
// changes merge into it and nothing already applied is applied again.
func TestRestartRestoresStateAndSkipsApplied(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		stop := e.start(200*time.Millisecond, time.Second)
		e.change("p", schemas.Fields{Title: str("kept")}, false)
		e.change("p", schemas.Fields{}, false)
		if ups := e.updates(e.read(e.names.Updates, 1, 10*time.Second)); len(ups) != 1 || ups[0].ChangeCount != 2 {
			t.Fatalf("first run: %+v", ups)
		}
		stop()
		e.start(200*time.Millisecond, time.Second)
		e.change("p", schemas.Fields{Price: str("5")}, false)
		ups := e.updates(e.read(e.names.Updates, 2, 10*time.Second))
		if len(ups) != 2 {
			t.Fatalf("want 2 updates, got %d", len(ups))
		}
		st := ups[1].State
		if ups[1].ChangeCount != 1 || st.ChangeCount != 3 || *st.Fields.Title != "kept" || *st.Fields.Price != "5" {
			t.Fatalf("after restart: update %+v state %+v", ups[1], st)
		}
	})
}

// Committed offsets never pass a change whose product has not been written,
// while changes written after it are committed.
func TestCommitNeverPassesBufferedChange(t *testing.T) {
	e := newEnv(t)
	e.start(time.Hour, time.Hour)
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
// the processor stopped are emitted by the next one, counted once.
func TestExactlyOnceRestartKeepsPendingBuffer(t *testing.T) {
	e := newEnv(t)
	e.eos = true
	stop := e.start(3*time.Second, 20*time.Second)
	e.change("p", schemas.Fields{Title: str("one")}, false)
	e.change("p", schemas.Fields{Price: str("2")}, false)
	time.Sleep(500 * time.Millisecond) // consumed and in the changelog, not yet due
	stop()
	if got := e.read(e.names.Updates, 1, time.Second); len(got) != 0 {
		t.Fatalf("a stop flushed the buffer early: %d updates", len(got))
	}
	e.start(3*time.Second, 20*time.Second)
	ups := e.updates(e.read(e.names.Updates, 2, 15*time.Second))
	if len(ups) != 1 || ups[0].ChangeCount != 2 || *ups[0].State.Fields.Title != "one" || *ups[0].State.Fields.Price != "2" || ups[0].State.ChangeCount != 2 {
		t.Fatalf("want exactly one update of both buffered changes after the restart, got %+v", ups)
	}
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
// stall the next cycle after every flush of an idle processor.
func TestExactlyOnceIdleFlushDoesNotPause(t *testing.T) {
	e := newEnv(t)
	e.eos = true
	var logs lockedBuffer
	e.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.start(50*time.Millisecond, time.Second)
	for i := range 3 {
		id := fmt.Sprintf("idle-%d", i)
		e.change(id, schemas.Fields{Title: str("t")}, false)
		// The change is polled and committed first; its update comes in a
		// later cycle that polls nothing.
		ups := e.updates(e.read(e.names.Updates, i+1, 10*time.Second))
		if len(ups) != i+1 || ups[i].ProductID != id {
			t.Fatalf("after %s, updates %+v", id, ups)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "transaction without consumer offsets") {
		t.Fatalf("no flush of an idle processor committed without offsets; log:\n%s", out)
	}
	if strings.Contains(out, "sleeping 500ms") {
		t.Fatalf("a transaction paused 500 ms after committing; log:\n%s", out)
	}
}
