package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
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
		c, err := kafka.ParseCompression(name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		// Fetch up to v12 names its topics (later versions use ids).
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), c.ProducerOpt(), kgo.DefaultProduceTopic("t"), kgo.MaxVersions(kversion.V3_0_0()))
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
	if _, err := kafka.ParseCompression("brotli"); !errors.Is(err, kafka.ErrUnknownCompression) {
		t.Errorf("an unknown codec: %v, want ErrUnknownCompression", err)
	}
}

// Every name config accepts for kafka.compression parses to the codec of
// that name, and there is no codec config does not accept.
func TestCompressionNamesMatchConfig(t *testing.T) {
	for _, name := range config.Compressions {
		c, err := kafka.ParseCompression(name)
		if err != nil || c.String() != name {
			t.Errorf("%q parses to %v, %v", name, c, err)
		}
	}
	codecs := []kafka.Compression{kafka.CompressionLZ4, kafka.CompressionSnappy, kafka.CompressionZstd, kafka.CompressionGzip, kafka.CompressionNone}
	if len(codecs) != len(config.Compressions) {
		t.Errorf("%d codecs, config accepts %d names", len(codecs), len(config.Compressions))
	}
	// "" and config's default are the zero value.
	for _, name := range []string{"", config.DefaultCompression} {
		if c, err := kafka.ParseCompression(name); err != nil || c != kafka.Compression(0) {
			t.Errorf("%q parses to %v, %v; want the zero value", name, c, err)
		}
	}
}

// A Compression decodes from its name in a config file and encodes back.
func TestCompressionText(t *testing.T) {
	var c kafka.Compression
	if err := c.UnmarshalText([]byte("zstd")); err != nil || c != kafka.CompressionZstd {
		t.Errorf("zstd decodes to %v, %v", c, err)
	}
	if err := c.UnmarshalText([]byte("lzma")); !errors.Is(err, kafka.ErrUnknownCompression) || c != kafka.CompressionZstd {
		t.Errorf("lzma: %v, and the value became %v", err, c)
	}
	if b, _ := kafka.CompressionGzip.MarshalText(); string(b) != "gzip" {
		t.Errorf("gzip encodes to %q", b)
	}
}
