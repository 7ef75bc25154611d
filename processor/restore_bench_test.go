package processor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Restore against a plain franz-go consumer of the same topics, in the same
// run on the same in-process broker: 30,000 product states (1 KB raw) over
// 3 partitions, and, exactly once, a pending changelog entry for a third of
// them. Each round reads everything once each way, in alternating order;
// x-plain is the plain consumer's time over the restore's (1 is as fast).
func BenchmarkRestore(b *testing.B) {
	names := topics.For("t.")
	serde := newSerde(b, names)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	// Written as the processor writes them: lz4 by kafka.LZ4Compressor.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kafka.CompressionLZ4.ProducerOpt())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	ctx := context.Background()
	if err := topics.Ensure(ctx, kadm.NewClient(cl), names, topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		b.Fatal(err)
	}
	if err := topics.EnsurePending(ctx, kadm.NewClient(cl), names, "g", topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		b.Fatal(err)
	}
	const n = 30_000
	pad := fmt.Sprintf("%0*d", 1<<10, 0)
	var recs []*kgo.Record
	for part := range int32(3) {
		recs = append(recs, &kgo.Record{Topic: names.Changes, Partition: part, Value: []byte("x")}) // versions stay below the end of changes
	}
	pendingEntries := 0
	for i := range n {
		id := strconv.Itoa(i)
		st := schemas.State{Namespace: "ns", ProductID: id, Source: "s", Provider: "lisa", Raw: `{"id":"` + id + `","pad":"` + pad + `"}`,
			Fields: schemas.Fields{Price: str(id)}, ChangeCount: 3, LastEventID: "e" + id, UpdatedAt: t0, OccurredAt: t0,
			FieldTimes: map[string]int64{"fields.price": 1, "raw.id": 1, "raw.pad": 1}, DedupeFingerprints: []int64{1, 2, 3}}
		v, err := serde.EncodeState(&st)
		if err != nil {
			b.Fatal(err)
		}
		part := int32(i % 3)
		recs = append(recs, &kgo.Record{Topic: names.Products, Partition: part, Key: []byte(st.Key()), Value: v,
			Headers: []kgo.RecordHeader{{Key: versionHeader, Value: []byte("0")}}})
		if i%3 == 0 {
			key := internalKey('p', []byte(st.Key()))
			pv, err := encodePending(&entry{state: st}, &pending{key: key, first: 0, count: 2, firstSeen: t0, lastSeen: t0, firstRecv: t0, lastRecv: t0}, false)
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: names.Pending("g"), Partition: part, Key: []byte(key), Value: pv})
			pendingEntries++
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	parts := []int32{0, 1, 2}
	for _, eos := range []bool{false, true} {
		name := map[bool]string{false: "at-least-once", true: "exactly-once"}[eos]
		want := n
		readTopics := []string{names.Products}
		if eos {
			want += pendingEntries
			readTopics = append(readTopics, names.Pending("g"))
		}
		b.Run(name, func(b *testing.B) {
			cfg := Config{Brokers: cluster.ListenAddrs(), Topics: names, Group: "g", QuietPeriod: time.Second, MaxDelay: time.Second, Serde: serde,
				MaxPendingKeys: n, MaxJSONDepth: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ExactlyOnce: eos}
			if err := validate(&cfg); err != nil {
				b.Fatal(err)
			}
			p := newProcessor(cfg)
			var restoreTook, plainTook time.Duration
			round := 0
			for b.Loop() {
				restoreOnce := func() {
					start := time.Now()
					r, err := p.restore(ctx, parts)
					restoreTook += time.Since(start)
					if err != nil || r.records != want {
						b.Fatalf("restore: %d records of %d, %v", r.records, want, err)
					}
				}
				plainOnce := func() {
					start := time.Now()
					if got := plainRead(b, cluster, readTopics, want); got != want {
						b.Fatalf("plain read: %d records of %d", got, want)
					}
					plainTook += time.Since(start)
				}
				if round%2 == 0 {
					restoreOnce()
					plainOnce()
				} else {
					plainOnce()
					restoreOnce()
				}
				round++
			}
			b.ReportMetric(plainTook.Seconds()/restoreTook.Seconds(), "x-plain")
			b.ReportMetric(float64(restoreTook.Nanoseconds())/float64(round*want), "restore-ns/record")
			b.ReportMetric(float64(plainTook.Nanoseconds())/float64(round*want), "plain-ns/record")
		})
	}
}

// plainRead consumes topics from the start with a plain franz-go client,
// committed records only as a restore reads them, until want records
// arrived, and returns how many did.
func plainRead(b *testing.B, cluster *kfake.Cluster, topicNames []string, want int) int {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topicNames...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := 0
	for got < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(*kgo.Record) { got++ })
	}
	return got
}
