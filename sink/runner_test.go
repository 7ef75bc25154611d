package sink_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/schemas/schemastest"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/postgres"
	"github.com/productstream/productstream/sink/redis"
	"github.com/productstream/productstream/sink/sinktest"
)

// The runner's tests run it against kfake and a real Redis, through the
// suite's proxy, so the backend can be cut off.

type fixture struct {
	t       *testing.T
	ctx     context.Context
	cluster *kfake.Cluster
	serde   *schemas.Serde
	prod    *kgo.Client
	proxy   *sinktest.Proxy
	rdb     *goredis.Client
	prefix  string
	reg     *prometheus.Registry
	metrics *sink.Metrics
	sink    *redis.Sink
	runner  *sink.Runner
}

const (
	topic = "products"
	dlq   = "sink.cache.dlq"
	group = "sink.cache"
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic, dlq))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	serde := schemastest.Serde(t, map[schemas.Kind][]string{schemas.KindState: {topic}})
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	addr := sinktest.StartBackend(t, "redis")
	f := &fixture{t: t, ctx: ctx, cluster: cluster, serde: serde, prod: prod,
		proxy: sinktest.NewProxy(t, addr, false), rdb: goredis.NewClient(&goredis.Options{Addr: addr}),
		prefix: fmt.Sprintf("runner/%d/%s/", time.Now().UnixNano(), t.Name()), reg: prometheus.NewRegistry()}
	t.Cleanup(func() { _ = f.rdb.Close() })
	if f.metrics, err = sink.NewMetrics(f.reg); err != nil {
		t.Fatal(err)
	}
	f.sink, err = redis.New(ctx, config.SinkRedis{Addr: f.proxy.Addr(), KeyPrefix: f.prefix}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.sink.Close() })
	f.runner = f.newRunner(nil)
	return f
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (f *fixture) newRunner(namespaces []string) *sink.Runner {
	r, err := sink.NewRunner(sink.Config{Name: "cache", Sink: f.sink,
		Client: []kgo.Opt{kgo.SeedBrokers(f.cluster.ListenAddrs()...)}, Topic: topic, Group: group, DLQ: dlq,
		Namespaces: namespaces, MaxRecords: 50, MaxBytes: 1 << 20, Linger: 20 * time.Millisecond,
		RetryInitial: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, Decoder: f.serde,
		Metrics: f.metrics, Log: quiet(), GenerationsEvery: 200 * time.Millisecond})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// state produces key's state at version (price "p<version>").
func (f *fixture) state(key string, version int64) {
	f.t.Helper()
	ns, id, _ := strings.Cut(key, ":")
	price := "p" + strconv.FormatInt(version, 10)
	v, err := f.serde.EncodeState(&schemas.State{Namespace: ns, ProductID: id, Source: "s", Provider: "lisa",
		Version: version, UpdatedAt: time.Now(), Fields: schemas.Fields{Price: &price}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.produce(key, v, version)
}

func (f *fixture) produce(key string, value []byte, version int64) {
	f.t.Helper()
	r := &kgo.Record{Key: []byte(key), Value: value,
		Headers: []kgo.RecordHeader{{Key: "version", Value: []byte(strconv.FormatInt(version, 10))}}}
	if err := f.prod.ProduceSync(f.ctx, r).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

// start runs r until stop is called or the test ends; stop fails the test
// if Run returned an error.
func (f *fixture) start(r *sink.Runner) (stop func()) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("runner: %v", err)
			}
		})
	}
	f.t.Cleanup(stop)
	return stop
}

// caughtUp waits until the group has committed the topic's end offsets.
func (f *fixture) caughtUp() {
	f.t.Helper()
	adm := kadm.NewClient(f.prod)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(f.ctx, topic)
		committed, cerr := adm.FetchOffsets(f.ctx, group)
		if err == nil && cerr == nil {
			behind := false
			ends.Each(func(o kadm.ListedOffset) {
				if c, ok := committed.Lookup(topic, o.Partition); o.Offset > 0 && (!ok || c.At < o.Offset) {
					behind = true
				}
			})
			if !behind {
				return
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the sink did not catch up: ends %v, committed %v (%v, %v)", ends, committed, err, cerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// held reads a key's hash in Redis directly.
func (f *fixture) held(key string) map[string]string {
	f.t.Helper()
	h, err := f.rdb.HGetAll(f.ctx, f.prefix+key).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// metric is the value of the series of name whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func (f *fixture) count(outcome string) float64 {
	return metric(f.t, f.reg, "productstream_sink_records_total", map[string]string{"outcome": outcome})
}

// The runner applies the highest version of each key, keeps deletes as
// markers, counts stale and filtered records, dead-letters what it cannot
// decode with headers that say why, and commits past all of it.
func TestRunnerAppliesFiltersAndDeadLetters(t *testing.T) {
	f := newFixture(t)
	f.runner = f.newRunner([]string{"shop"})
	f.state("shop:0", 0) // the first offset of changes: a real version
	f.state("shop:1", 5)
	f.state("shop:1", 9)
	f.state("shop:1", 7) // older than 9: stale
	f.state("shop:2", 3)
	f.produce("shop:2", nil, 4) // a tombstone
	f.state("other:1", 2)       // filtered out
	f.produce("shop:3", []byte("not avro"), 1)
	f.start(f.runner)
	f.caughtUp()

	if h := f.held("shop:1"); h["version"] != "9" || h["deleted"] != "0" || !strings.Contains(h["state"], `"p9"`) {
		t.Errorf("shop:1 holds %v, want version 9 with price p9", h)
	}
	if h := f.held("shop:0"); h["version"] != "0" || h["deleted"] != "0" {
		t.Errorf("shop:0 holds %v, want version 0", h)
	}
	if h := f.held("shop:2"); h["version"] != "4" || h["deleted"] != "1" {
		t.Errorf("shop:2 holds %v, want the delete marker at version 4", h)
	}
	if h := f.held("other:1"); len(h) != 0 {
		t.Errorf("a filtered namespace was written: %v", h)
	}
	letters, err := sink.ReadDeadLetters(f.ctx, []kgo.Opt{kgo.SeedBrokers(f.cluster.ListenAddrs()...)}, dlq, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].Key != "shop:3" || letters[0].Class != "decode" || letters[0].Origin.Topic != topic || letters[0].Reason == "" {
		t.Fatalf("dead letters %+v, want shop:3 as a decode error", letters)
	}
	if got := f.count("filtered"); got != 1 {
		t.Errorf("filtered = %v, want 1", got)
	}
	if got := f.count("dlq"); got != 1 {
		t.Errorf("dlq = %v, want 1", got)
	}
	if got := f.count("stale"); got < 1 {
		t.Errorf("stale = %v, want at least 1 (version 7 after 9)", got)
	}
}

// A backend outage in the middle of a stream pauses the sink: it retries
// until the backend is back, never exits, and then applies everything.
func TestRunnerRidesOutABackendOutage(t *testing.T) {
	outage := 20 * time.Second
	if v := os.Getenv(sinktest.OutageEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		outage = d
	}
	f := newFixture(t)
	f.start(f.runner)
	for i := range 50 {
		f.state(fmt.Sprintf("ns:%d", i), 1)
	}
	f.caughtUp()
	f.proxy.Down()
	for i := range 50 {
		f.state(fmt.Sprintf("ns:%d", i), 2)
		f.state(fmt.Sprintf("ns:new%d", i), 1)
	}
	time.Sleep(outage)
	if h := f.held("ns:0"); h["version"] != "1" {
		t.Fatalf("ns:0 holds %v during the outage, want version 1", h)
	}
	if up := metric(t, f.reg, "productstream_sink_backend_up", nil); up != 0 {
		t.Errorf("backend_up is %v during the outage, want 0", up)
	}
	f.proxy.Up()
	f.caughtUp()
	for i := range 50 {
		if h := f.held(fmt.Sprintf("ns:%d", i)); h["version"] != "2" {
			t.Fatalf("ns:%d holds %v after the outage, want version 2", i, h)
		}
		if h := f.held(fmt.Sprintf("ns:new%d", i)); h["version"] != "1" {
			t.Fatalf("ns:new%d holds %v after the outage, want version 1", i, h)
		}
	}
	if up := metric(t, f.reg, "productstream_sink_backend_up", nil); up != 1 {
		t.Errorf("backend_up is %v after the outage, want 1", up)
	}
}

// A record the backend refuses for good goes to the dead letter topic and
// the rest of its batch is applied; replay-dlq applies it once the cause
// is gone.
func TestRunnerDeadLettersPermanentFailuresAndReplays(t *testing.T) {
	f := newFixture(t)
	// Someone else wrote a string where shop:2's hash goes: WRONGTYPE.
	if err := f.rdb.Set(f.ctx, f.prefix+"shop:2", "squatter", 0).Err(); err != nil {
		t.Fatal(err)
	}
	f.state("shop:1", 1)
	f.state("shop:2", 1)
	f.state("shop:3", 1)
	f.start(f.runner)
	f.caughtUp()
	if f.held("shop:1")["version"] != "1" || f.held("shop:3")["version"] != "1" {
		t.Fatal("the rest of the batch was not applied")
	}
	letters, err := sink.ReadDeadLetters(f.ctx, []kgo.Opt{kgo.SeedBrokers(f.cluster.ListenAddrs()...)}, dlq, "shop:2")
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].Class != "permanent" || letters[0].Version != 1 || !strings.Contains(letters[0].Reason, "WRONGTYPE") {
		t.Fatalf("dead letters %+v, want shop:2 version 1 refused with WRONGTYPE", letters)
	}
	ex, err := f.runner.Explain(f.ctx, "shop:2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ex.Verdict, "in the dead letter topic because") {
		t.Errorf("explain: %q", ex.Verdict)
	}
	if err := f.rdb.Del(f.ctx, f.prefix+"shop:2").Err(); err != nil {
		t.Fatal(err)
	}
	res, err := f.runner.ReplayDeadLetters(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 1 || res.StillFailing != 0 {
		t.Fatalf("replay: %+v, want 1 applied", res)
	}
	if h := f.held("shop:2"); h["version"] != "1" {
		t.Fatalf("shop:2 holds %v after the replay", h)
	}
}

// explain's one-line answer for each case.
func TestExplainVerdicts(t *testing.T) {
	f := newFixture(t)
	f.runner = f.newRunner([]string{"shop"})
	f.state("shop:applied", 3)
	f.state("shop:deleted", 2)
	f.produce("shop:deleted", nil, 5)
	f.state("shop:stale", 4)
	f.state("other:x", 1)
	stop := f.start(f.runner)
	f.caughtUp()
	stop()
	// Newer than the topic, written outside the runner: the topic's
	// version was refused as stale.
	res, err := f.sink.Write(f.ctx, []sink.Record{{Key: "shop:stale", Namespace: "shop", ID: "stale", Version: 8, Doc: []byte(`{}`)}})
	if err != nil || res[0].Outcome != sink.Applied {
		t.Fatal(res, err)
	}
	f.state("shop:later", 1) // written while the sink is stopped
	cases := map[string]string{
		"shop:applied": "applied: the backend holds version 3",
		"shop:deleted": "deleted at version 5",
		"shop:stale":   "stale write refused: the backend holds version 8",
		"other:x":      "filtered out",
		"shop:later":   "not consumed yet: version 1",
		"shop:never":   "not on products",
	}
	for key, want := range cases {
		ex, err := f.runner.Explain(f.ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if !strings.HasPrefix(ex.Verdict, want) {
			t.Errorf("%s: %q, want it to begin %q", key, ex.Verdict, want)
		}
	}
}

// A rebuild while the runner runs and records keep arriving builds a new
// generation equal to the topic, switches readers to it, and the runner
// drops the old one after its grace period.
func TestRebuildWhileLive(t *testing.T) {
	f := newFixture(t)
	r := f.newRunner(nil)
	f.start(r)
	for i := range 200 {
		f.state(fmt.Sprintf("ns:%d", i), 1)
	}
	f.caughtUp()
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for v := int64(2); v <= 6; v++ {
			for i := range 200 {
				f.state(fmt.Sprintf("ns:%d", i), v)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var reports int
	n, err := r.Rebuild(f.ctx, func(sink.Progress) { reports++ })
	if err != nil {
		t.Fatal(err)
	}
	<-sending
	f.caughtUp()
	live, building, err := f.sink.Generations(f.ctx)
	if err != nil || live != n || building != 0 || n != 2 {
		t.Fatalf("generations live %d building %d (%v), want 2 live", live, building, err)
	}
	for i := range 200 {
		h, ok, err := f.sink.Held(f.ctx, fmt.Sprintf("ns:%d", i))
		if err != nil || !ok || h.Version != 6 {
			t.Fatalf("ns:%d in generation 2: %+v %v %v, want version 6", i, h, ok, err)
		}
	}
	if reports == 0 {
		t.Error("no progress was reported")
	}
}

// waitCommitted waits until group has committed the end offsets of topic.
func waitCommitted(t *testing.T, ctx context.Context, cl *kgo.Client, topic, group string) {
	t.Helper()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		committed, cerr := adm.FetchOffsets(ctx, group)
		if err == nil && cerr == nil {
			behind := false
			ends.Each(func(o kadm.ListedOffset) {
				if c, ok := committed.Lookup(topic, o.Partition); o.Offset > 0 && (!ok || c.At < o.Offset) {
					behind = true
				}
			})
			if !behind {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not catch up on %s: ends %v, committed %v (%v, %v)", group, topic, ends, committed, err, cerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A runner in history mode hands the PostgreSQL history sink every change
// of a changes topic, several of one key per batch: each change is a row,
// in offset order, once per event id (a redelivered change counted once),
// a change the database refuses is dead-lettered, explain reads a key's
// latest change back, and rebuild is refused (no generations).
func TestRunnerHistoryKeepsEveryChange(t *testing.T) {
	const (
		changes = "changes"
		hdlq    = "sink.history.dlq"
		hgroup  = "sink.history"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, changes, hdlq))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	serde := schemastest.Serde(t, map[schemas.Kind][]string{schemas.KindChange: {changes}})
	client := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}
	prod, err := kgo.NewClient(append(client, kgo.DefaultProduceTopic(changes))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)

	dsn := sinktest.StartBackend(t, "postgres")
	table := fmt.Sprintf("runner_history_%d", time.Now().UnixNano()%1e9)
	hist, err := postgres.NewHistory(ctx, config.SinkPostgres{DSN: dsn, Table: table}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hist.Close() })
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{table + "_history"}.Sanitize()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = conn.Close(context.Background())
	})

	reg := prometheus.NewRegistry()
	metrics, err := sink.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sink.Config{Name: "history", Sink: hist, Client: client, Topic: changes, Group: hgroup, DLQ: hdlq,
		VersionIsOffset: true, History: true, MaxRecords: 50, MaxBytes: 1 << 20, Linger: 20 * time.Millisecond,
		RetryInitial: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, Decoder: serde, Metrics: metrics, Log: quiet()}
	noOffsets := cfg
	noOffsets.VersionIsOffset = false
	if _, err := sink.NewRunner(noOffsets); !errors.Is(err, sink.ErrConfig) {
		t.Fatalf("NewRunner with History but versions not offsets = %v, want ErrConfig", err)
	}
	r, err := sink.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}

	produce := func(c schemas.Change) {
		t.Helper()
		v, err := serde.EncodeChange(&c)
		if err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(c.Key()), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	change := func(key, round int) schemas.Change {
		price := fmt.Sprintf("%d.%02d", key, round)
		return schemas.Change{EventID: fmt.Sprintf("k%d-r%d", key, round), Source: "shop", Provider: "lisa",
			Namespace: "ns", EventType: "product.updated", ProductID: strconv.Itoa(key),
			ReceivedAt: time.Now(), Fields: schemas.Fields{Price: &price}, Raw: `{"price":"` + price + `"}`}
	}
	// All produced before the runner starts, so a batch holds several
	// changes of each key.
	const keys, rounds = 5, 6
	want := map[string][]string{} // each key's event ids, in order
	for round := range rounds {
		for k := range keys {
			c := change(k, round)
			if k == 0 && round == rounds-1 {
				c.EventType, c.Deleted, c.Fields = "product.deleted", true, schemas.Fields{}
			}
			produce(c)
			want[c.Key()] = append(want[c.Key()], c.EventID)
		}
		if round == 2 {
			for k := range keys {
				produce(change(k, 1)) // redelivered: the same event id again
			}
		}
	}
	poison := change(9, 0)
	poison.Raw = "bad\x00" // jsonb refuses \u0000
	produce(poison)
	// ns:7 is refused until the test lifts a constraint, then replayed.
	histTable := pgx.Identifier{table + "_history"}.Sanitize()
	if _, err := conn.Exec(ctx, "ALTER TABLE "+histTable+" ADD CONSTRAINT not_7 CHECK (key <> 'ns:7')"); err != nil {
		t.Fatal(err)
	}
	refused := change(7, 0)
	produce(refused)

	stop := func() func() {
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				rcancel()
				if err := <-done; err != nil {
					t.Errorf("runner: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return stop
	}()
	waitCommitted(t, ctx, prod, changes, hgroup)
	stop()

	for k := range keys {
		key := "ns:" + strconv.Itoa(k)
		rows, err := conn.Query(ctx, "SELECT event_id FROM "+histTable+" WHERE key = $1 ORDER BY version", key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != strings.Join(want[key], " ") {
			t.Errorf("%s's history by version is %v, want %v", key, got, want[key])
		}
	}
	var rows, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id) FROM "+histTable).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != keys*rounds || distinct != rows {
		t.Fatalf("the history holds %d rows (%d event ids), want %d", rows, distinct, keys*rounds)
	}
	var deleted int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+histTable+" WHERE deleted").Scan(&deleted); err != nil || deleted != 1 {
		t.Fatalf("%d deleting changes (%v), want 1", deleted, err)
	}
	// Every record was handed to the sink and applied, the redelivered
	// ones included (a no-op); none was dropped as stale.
	outcome := func(o string) float64 {
		return metric(t, reg, "productstream_sink_records_total", map[string]string{"outcome": o})
	}
	if a, d, s := outcome("applied"), outcome("deleted"), outcome("stale"); a != keys*rounds+keys-1 || d != 1 || s != 0 {
		t.Errorf("applied %v, deleted %v, stale %v; want %d, 1, 0", a, d, s, keys*rounds+keys-1)
	}

	letters, err := sink.ReadDeadLetters(ctx, client, hdlq, "")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, d := range letters {
		if d.Class == "permanent" {
			reasons[d.Key] = d.Reason
		}
	}
	if len(letters) != 2 || !strings.Contains(reasons[poison.Key()], "22P05") || !strings.Contains(reasons[refused.Key()], "23514") {
		t.Fatalf("dead letters %+v, want %s refused by jsonb (22P05) and %s by the check (23514)", letters, poison.Key(), refused.Key())
	}
	// Replayed once its cause is gone, a change keeps its offset on the
	// changes topic as its version.
	if _, err := conn.Exec(ctx, "ALTER TABLE "+histTable+" DROP CONSTRAINT not_7"); err != nil {
		t.Fatal(err)
	}
	replayed, err := r.ReplayDeadLetters(ctx)
	if err != nil || replayed.Applied != 1 || replayed.StillFailing != 1 {
		t.Fatalf("replay: %+v, %v; want %s applied and %s still failing", replayed, err, refused.Key(), poison.Key())
	}
	var version int64
	if err := conn.QueryRow(ctx, "SELECT version FROM "+histTable+" WHERE event_id = $1", refused.EventID).Scan(&version); err != nil {
		t.Fatal(err)
	}
	for _, d := range letters {
		if d.Key == refused.Key() && version != d.Origin.Offset {
			t.Errorf("the replayed change holds version %d, want its offset %d on %s", version, d.Origin.Offset, changes)
		}
	}
	for key, verdict := range map[string]string{"ns:1": "applied: the backend holds version", "ns:0": "deleted at version"} {
		ex, err := r.Explain(ctx, key)
		if err != nil {
			t.Fatalf("explain %s: %v", key, err)
		}
		if !strings.HasPrefix(ex.Verdict, verdict) {
			t.Errorf("explain %s: %q, want it to begin %q", key, ex.Verdict, verdict)
		}
	}
	if _, err := r.Rebuild(ctx, nil); !errors.Is(err, sink.ErrNoGenerations) {
		t.Fatalf("Rebuild of a history sink = %v, want ErrNoGenerations", err)
	}
}

// The lag metric reads 0 for a sink caught up on a transactional topic,
// whose last offset is a commit marker no consumer ever reads, and counts
// the records of a committed transaction the sink has not written yet.
func TestRunnerLagReadsPastTransactionMarkers(t *testing.T) {
	f := newFixture(t)
	r, err := sink.NewRunner(sink.Config{Name: "cache", Sink: f.sink,
		Client: []kgo.Opt{kgo.SeedBrokers(f.cluster.ListenAddrs()...)}, Topic: topic, Group: group, DLQ: dlq,
		MaxRecords: 50, MaxBytes: 1 << 20, Linger: 20 * time.Millisecond,
		RetryInitial: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Decoder: f.serde,
		Metrics: f.metrics, Log: quiet(), LagEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := kgo.NewClient(kgo.SeedBrokers(f.cluster.ListenAddrs()...), kgo.TransactionalID("lag"), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	key := "shop:lag"
	transaction := func(from, to int64) {
		t.Helper()
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for v := from; v <= to; v++ {
			ns, id, _ := strings.Cut(key, ":")
			price := "p" + strconv.FormatInt(v, 10)
			value, err := f.serde.EncodeState(&schemas.State{Namespace: ns, ProductID: id, Source: "s", Provider: "lisa",
				Version: v, UpdatedAt: time.Now(), Fields: schemas.Fields{Price: &price}})
			if err != nil {
				t.Fatal(err)
			}
			rec := &kgo.Record{Key: []byte(key), Value: value, Headers: []kgo.RecordHeader{{Key: "version", Value: []byte(strconv.FormatInt(v, 10))}}}
			if err := tx.ProduceSync(f.ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.EndTransaction(f.ctx, kgo.TransactionEndTry(kgo.TryCommit)); err != nil {
			t.Fatal(err)
		}
	}
	// lagIs waits until the key's partition's lag series reads want.
	lagIs := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var got map[string]float64
		for time.Now().Before(deadline) {
			got = lagSeries(t, f.reg)
			if len(got) > 0 {
				total := 0.0
				for _, v := range got {
					total += v
				}
				if total == want {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("lag series %v, want a total of %v", got, want)
	}
	transaction(1, 3)
	f.start(r)
	lagIs(0)
	if h := f.held(key); h["version"] != "3" {
		t.Fatalf("%s holds %v, want version 3", key, h)
	}
	// Stays 0: a marker after the last record is not lag.
	time.Sleep(500 * time.Millisecond)
	lagIs(0)

	f.proxy.Down()
	transaction(4, 5)
	lagIs(2)
	f.proxy.Up()
	lagIs(0)
}

// lagSeries is every productstream_sink_lag_records series, by partition.
func lagSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "productstream_sink_lag_records" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "partition" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}
