package timeline

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// The size of BenchmarkTimelineMillionChanges's changes topic.
const (
	benchPartitions   = 10
	benchPerPartition = 100_000 // records on each partition, the key's included
	benchKeyChanges   = 100     // the key's own, spread over its partition
	benchRecordsPerK  = 100     // records of each other key
)

// BenchmarkTimelineMillionChanges reads one key's timeline from a changes
// topic of 1,000,000 records (about 200 bytes each, lz4 batches as ingest
// writes them) in 10 partitions, 100,000 of them on the key's partition,
// with a window covering the whole topic: every record of the partition
// is read. The topic is built before the timer starts.
func BenchmarkTimelineMillionChanges(b *testing.B) {
	names := topics.For("bench.")
	serde := newSerde(b, names)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	ctx := context.Background()
	if err := topics.Ensure(ctx, kadm.NewClient(cl), names, topics.Spec{Partitions: benchPartitions, ReplicationFactor: -1}); err != nil {
		b.Fatal(err)
	}
	const key = "bench:target"
	start := time.Now()
	fillChanges(b, cl, serde, names.Changes, key)
	b.Logf("built %d records in %s", benchPartitions*benchPerPartition, time.Since(start).Round(time.Millisecond))

	r, err := New(cl, serde, names, "g")
	if err != nil {
		b.Fatal(err)
	}
	q := Query{Key: key, Since: start.Add(-time.Minute)}
	var tl *Timeline
	for b.Loop() {
		if tl, err = r.Read(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if s := tl.Scans.Changes; s.Records != benchPerPartition || len(tl.Changes) != benchKeyChanges || tl.Truncated {
		b.Fatalf("read %d records, %d changes, truncated by %v; want %d, %d, none", s.Records, len(tl.Changes), tl.TruncatedBy,
			benchPerPartition, benchKeyChanges)
	}
	b.ReportMetric(float64(tl.Scans.Changes.Records), "records/op")
}

// fillChanges writes benchPerPartition change records to each partition of
// topic: key's changes spread evenly over its partition, and other keys'
// everywhere. Each key's value is encoded once; every record's copy gets
// an event id and raw content of its own (random hex), so that batches
// compress as real ones do rather than as copies of one value.
func fillChanges(b *testing.B, cl *kgo.Client, serde *schemas.Serde, topic, key string) {
	b.Helper()
	eventID, pad := strings.Repeat("E", 64), strings.Repeat("P", 64)
	value := func(k string) []byte {
		ns, id, _ := strings.Cut(k, ":")
		ch := schemas.Change{EventID: eventID, Source: "bench", Provider: "lisa", Namespace: ns, EventType: "product.updated",
			ProductID: id, ReceivedAt: time.Now(), Raw: `{"productId":"` + id + `","price":"19.99","pad":"` + pad + `"}`}
		v, err := serde.EncodeChange(&ch)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	rng := rand.New(rand.NewPCG(1, 2))
	unique := func(v []byte) []byte {
		v = bytes.Clone(v)
		for _, span := range []string{eventID, pad} {
			i := bytes.Index(v, []byte(span))
			var r [32]byte
			for j := range r {
				r[j] = byte(rng.Uint32())
			}
			hex.Encode(v[i:i+64], r[:])
		}
		return v
	}
	keyPart := partitionOf([]byte(key), benchPartitions)
	keyValue := value(key)
	every := benchPerPartition / benchKeyChanges
	// others[p] is the key of partition p now written, its value, and how
	// many of its records remain.
	type current struct {
		key, value []byte
		left       int
	}
	others := make([]current, benchPartitions)
	next := 0
	fresh := func(p int32) current {
		for ; ; next++ {
			k := fmt.Sprintf("bench:p%d", next)
			if partitionOf([]byte(k), benchPartitions) == p {
				next++
				return current{[]byte(k), value(k), benchRecordsPerK}
			}
		}
	}
	var size int
	batch := make([]*kgo.Record, 0, 50_000)
	flush := func() {
		if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range benchPerPartition {
		for p := range int32(benchPartitions) {
			rec := &kgo.Record{Topic: topic}
			if p == keyPart && i%every == every-1 {
				rec.Key, rec.Value = []byte(key), unique(keyValue)
			} else {
				if others[p].left == 0 {
					others[p] = fresh(p)
				}
				others[p].left--
				rec.Key, rec.Value = others[p].key, unique(others[p].value)
			}
			size += len(rec.Key) + len(rec.Value)
			if batch = append(batch, rec); len(batch) == cap(batch) {
				flush()
			}
		}
	}
	flush()
	b.Logf("%d bytes of keys and values, %d a record", size, size/(benchPartitions*benchPerPartition))
}
