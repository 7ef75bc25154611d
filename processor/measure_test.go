//go:build stress

package processor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// Throughput of the processor in both modes, and of its restore, each as a
// ratio to a plain franz-go baseline measured in the same run on the same
// in-process broker (machines here are noisy: compare ratios, not times).
//
//	go test -tags stress -run MeasureProcessor -v ./processor/
func TestMeasureProcessor(t *testing.T) {
	n := envInt("PRODUCTSTREAM_MEASURE_CHANGES", 50_000)
	keys := envInt("PRODUCTSTREAM_MEASURE_KEYS", 5_000)

	// B3: consume the changes in a group and produce each one on, committing.
	base := newEnv(t)
	fill(t, base, n, keys)
	b3 := timeUntil(t, base, "b3", func(ctx context.Context) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(base.cluster.ListenAddrs()...), kgo.ConsumerGroup("b3"),
			kgo.ConsumeTopics(base.names.Changes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.DisableAutoCommit(), kgo.DefaultProduceTopic(base.names.Updates))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			var out []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) { out = append(out, &kgo.Record{Key: r.Key, Value: r.Value}) })
			if len(out) > 0 {
				if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
					return
				}
				_ = cl.CommitUncommittedOffsets(ctx)
			}
		}
	}, n)
	t.Logf("B3 franz-go passthrough: %d changes in %s = %.0f changes/s", n, b3.Round(time.Millisecond), float64(n)/b3.Seconds())

	for _, eos := range []bool{false, true} {
		e := newEnv(t)
		e.eos = eos
		fill(t, e, n, keys)
		took := timeUntil(t, e, "g", func(ctx context.Context) {
			p, err := New(withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "g", QuietPeriod: 50 * time.Millisecond,
				MaxDelay: 500 * time.Millisecond, Serde: e.serde, Log: e.log, ExactlyOnce: eos}))
			if err != nil {
				t.Error(err)
				return
			}
			_ = p.Run(ctx)
		}, n)
		mode := map[bool]string{false: "at-least-once", true: "exactly-once"}[eos]
		t.Logf("processor %s: %d changes over %d products in %s = %.0f changes/s, %.2f x B3",
			mode, n, keys, took.Round(time.Millisecond), float64(n)/took.Seconds(), b3.Seconds()/took.Seconds())

		if !eos {
			// Restore: the products topic now holds a state per key.
			p, err := New(withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "r", QuietPeriod: time.Second, MaxDelay: time.Second, Serde: e.serde, Log: e.log}))
			if err != nil {
				t.Fatal(err)
			}
			parts := []int32{0, 1, 2}
			start := time.Now()
			r, err := p.restore(context.Background(), parts)
			restoreTook := time.Since(start)
			p.client.Close()
			if err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			plain := e.read(e.names.Products, r.records, time.Minute)
			plainTook := time.Since(start)
			t.Logf("restore: %d state records in %s = %.0f records/s; plain consume of the same topic %.0f records/s; %.2f x",
				r.records, restoreTook.Round(time.Millisecond), float64(r.records)/restoreTook.Seconds(),
				float64(len(plain))/plainTook.Seconds(), plainTook.Seconds()/restoreTook.Seconds())
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// fill produces n changes over keys products to the changes topic.
func fill(t *testing.T, e *env, n, keys int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.DefaultProduceTopic(e.names.Changes))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	batch := make([]*kgo.Record, 0, 1000)
	for i := range n {
		id := fmt.Sprintf("p%d", i%keys)
		price := strconv.Itoa(i)
		ch := schemas.Change{EventID: "e" + price, Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
			Resource: "product", ProductID: id, ReceivedAt: time.Now(), Fields: schemas.Fields{Price: &price},
			Raw: `{"productId":"` + id + `","price":` + price + `}`}
		v, err := e.serde.EncodeChange(&ch)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, &kgo.Record{Key: []byte(ch.Key()), Value: v})
		if len(batch) == cap(batch) || i == n-1 {
			if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// timeUntil runs fn until the group has committed all n changes, and
// returns how long that took.
func timeUntil(t *testing.T, e *env, group string, fn func(context.Context), n int) time.Duration {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); fn(ctx) }()
	adm := kadm.NewClient(e.client)
	for {
		offs, err := adm.FetchOffsets(context.Background(), group)
		var committed int64
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) { committed += o.At })
		}
		if committed >= int64(n) {
			took := time.Since(start)
			cancel()
			<-done
			return took
		}
		if time.Since(start) > 5*time.Minute {
			cancel()
			<-done
			t.Fatalf("%s: only %d of %d committed after 5 minutes", group, committed, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
