package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// countingPool counts the buffers a DecompressPool hands out and takes
// back.
type countingPool struct {
	*kafka.DecompressPool
	got, put atomic.Int64
}

func (c *countingPool) GetDecompressBytes(compressed []byte, codec kgo.CompressionCodecType) []byte {
	c.got.Add(1)
	return c.DecompressPool.GetDecompressBytes(compressed, codec)
}

func (c *countingPool) PutDecompressBytes(b []byte) {
	c.put.Add(1)
	c.DecompressPool.PutDecompressBytes(b)
}

// A consumer decompressing into the pool reads every value as written,
// over batches larger and smaller than the pool guesses, while the values
// of earlier polls, recycled, go back to the pool; a value cloned before
// its record was recycled stays as it was.
func TestDecompressPoolKeepsValuesUntilRecycled(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kafka.CompressionLZ4.ProducerOpt(), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	value := func(i int) []byte {
		// Compressible, of sizes from a few bytes to 200 KB.
		return bytes.Repeat(fmt.Appendf(nil, "record %d;", i), 1+(i*7919)%20_000)
	}
	const n = 300
	for i := range n {
		prod.Produce(ctx, &kgo.Record{Value: value(i)}, nil)
		if i%25 == 24 { // batches of 25 records
			if err := prod.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	pool := &countingPool{DecompressPool: kafka.NewDecompressPool()}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("t"),
		kgo.WithPools(pool), kgo.WithHooks(pool.DecompressPool), kgo.FetchMaxBytes(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var kept [][]byte // clones of every value, made before recycling
	seen := 0
	for seen < n {
		fetches := cl.PollFetches(ctx)
		if err := fetches.Err(); err != nil {
			t.Fatal(err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if !bytes.Equal(r.Value, value(int(r.Offset))) {
				t.Fatalf("offset %d: value of %d bytes differs from the one written", r.Offset, len(r.Value))
			}
			kept = append(kept, bytes.Clone(r.Value))
			seen++
		})
		fetches.EachRecord(func(r *kgo.Record) { r.Recycle() })
	}
	for i, v := range kept {
		if !bytes.Equal(v, value(i)) {
			t.Fatalf("offset %d: the clone changed after its record was recycled", i)
		}
	}
	if got, put := pool.got.Load(), pool.put.Load(); got == 0 || put != got {
		t.Errorf("%d buffers handed out, %d taken back; want every one back", got, put)
	}
}
