package topics

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Every codec kafka.compression accepts writes batches a broker takes and
// marks with that codec; an unknown name is an error.
func TestCompressionCodecs(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	// The codec is in the low three bits of a record batch's attributes.
	want := map[string]int16{"": 3, "lz4": 3, "snappy": 2, "zstd": 4, "gzip": 1, "none": 0}
	for name, codec := range want {
		opt, err := Compression(name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		// Fetch up to v12 names its topics (later versions use ids).
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), opt, kgo.DefaultProduceTopic("t"), kgo.MaxVersions(kversion.V3_0_0()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := cl.ProduceSync(ctx, &kgo.Record{Value: bytes.Repeat([]byte("compressible "), 400)}).First()
		if err != nil {
			t.Fatalf("%q: produce: %v", name, err)
		}
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 100, 1<<20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "t"
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.FetchOffset, fp.PartitionMaxBytes = r.Offset, 1<<20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp, err := req.RequestWith(ctx, cl)
		cancel()
		cl.Close()
		if err != nil {
			t.Fatalf("%q: fetch: %v", name, err)
		}
		var batch kmsg.RecordBatch
		if err := batch.ReadFrom(resp.Topics[0].Partitions[0].RecordBatches); err != nil {
			t.Fatalf("%q: record batch: %v", name, err)
		}
		if got := batch.Attributes & 7; got != codec {
			t.Errorf("%q: batch codec %d, want %d", name, got, codec)
		}
	}
	if _, err := Compression("brotli"); err == nil {
		t.Error("an unknown codec was accepted")
	}
}
