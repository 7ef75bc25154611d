package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"
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

// The lz4 compressor writes frames of 64 KiB blocks without the content
// checksum that both franz-go's decompressor and the lz4 reader take back
// to the same bytes, also when several goroutines share it and a batch
// spans many blocks.
func TestLZ4CompressorRoundTrips(t *testing.T) {
	c := kafka.NewLZ4Compressor()
	dec := kgo.DefaultDecompressor()
	sizes := []int{0, 1, 1000, 64 << 10, 5 << 20} // 5 MiB spans 80 blocks
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for _, size := range sizes {
				src := batchLike(size, g)
				out, codec := c.Compress(new(bytes.Buffer), src)
				if codec != kgo.CodecLz4 {
					t.Errorf("size %d: codec %d", size, codec)
					return
				}
				// Magic (4 bytes), then FLG, whose bit 2 is the content
				// checksum, then BD, whose bits 4-6 are the block size (4:
				// 64 KiB).
				if len(out) < 6 || out[4]&0x04 != 0 || out[5]>>4&0x07 != 4 {
					t.Errorf("size %d: frame descriptor % x says content checksum or blocks of other than 64 KiB", size, out[:min(len(out), 6)])
				}
				got, err := dec.Decompress(out, kgo.CodecLz4)
				if err != nil || !bytes.Equal(got, src) {
					t.Errorf("size %d: franz-go decompressed %d bytes, %v", size, len(got), err)
				}
				got, err = io.ReadAll(lz4.NewReader(bytes.NewReader(out)))
				if err != nil || !bytes.Equal(got, src) {
					t.Errorf("size %d: lz4 reader read %d bytes, %v", size, len(got), err)
				}
				if size > 1000 && len(out) >= size/2 {
					t.Errorf("size %d: compressed to %d bytes", size, len(out))
				}
			}
		})
	}
	wg.Wait()
}

// batchLike is n bytes of compressible, record-like text, varied by seed.
func batchLike(n, seed int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":"p%d-%d","price":"%d.%02d","title":"Trail shoe %d","stock":%d}`, seed, i, i%500, i%100, i%37, (i*7919)%1000)
	}
	return b.Bytes()[:n]
}

// lz4Compressors are the lz4 compressors the benchmarks compare, by name:
// franz-go's default and kafka.LZ4Compressor.
func lz4Compressors(b *testing.B) map[string]kgo.Compressor {
	def, err := kgo.DefaultCompressor(kgo.Lz4Compression())
	if err != nil {
		b.Fatal(err)
	}
	return map[string]kgo.Compressor{"franz-go-default": def, "productstream": kafka.NewLZ4Compressor()}
}

// BenchmarkLZ4 compresses a 1 MiB batch with franz-go's default lz4
// compressor (content checksum on) and with kafka.LZ4Compressor.
func BenchmarkLZ4(b *testing.B) {
	src := batchLike(1<<20, 1)
	for name, c := range lz4Compressors(b) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			var dst bytes.Buffer
			for b.Loop() {
				dst.Reset()
				if _, codec := c.Compress(&dst, src); codec != kgo.CodecLz4 {
					b.Fatal(codec)
				}
			}
		})
	}
}

// BenchmarkLZ4FreshReader decompresses a 16 KiB batch with a decompressor
// made for it, as the embedded broker does for every batch it compacts,
// from franz-go's default frames and from kafka.LZ4Compressor's. A reader
// takes a buffer of the frame's block size from a pool; under the race
// detector, which makes pools drop what they are given back, B/op shows
// what it allocates for each: 4 MiB for franz-go's, 64 KiB for ours.
func BenchmarkLZ4FreshReader(b *testing.B) {
	src := batchLike(16<<10, 1)
	for name, c := range lz4Compressors(b) {
		frame, _ := c.Compress(new(bytes.Buffer), src)
		frame = bytes.Clone(frame)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out, err := kgo.DefaultDecompressor().Decompress(frame, kgo.CodecLz4); err != nil || len(out) != len(src) {
					b.Fatal(len(out), err)
				}
			}
		})
	}
}
