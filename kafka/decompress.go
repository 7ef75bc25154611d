package kafka

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DecompressPool hands franz-go the buffers it decompresses fetched
// batches into, and takes each back once every record of its batch was
// recycled (kgo.Record.Recycle). Without it franz-go decompresses into a
// scratch buffer and copies the result for the records: a copy of every
// byte consumed, the largest part of decompressing in the processor's
// profile. Buffers are sized from the ratio of the batches read so far
// (it is also a kgo.HookFetchBatchRead), so that one rarely grows.
//
// A client using it (kgo.WithPools and kgo.WithHooks) must recycle each
// record once nothing refers to its key, value or headers any more, and
// must clone what it keeps: franz-go clears a buffer before it is reused.
// A record never recycled only leaves its buffer to the garbage collector.
// Safe for concurrent use.
type DecompressPool struct {
	buffers sync.Pool     // of *[]byte
	ratio   atomic.Uint64 // math.Float64bits: decompressed bytes per compressed byte, the largest seen lately
}

var (
	_ kgo.PoolDecompressBytes = (*DecompressPool)(nil)
	_ kgo.HookFetchBatchRead  = (*DecompressPool)(nil)
)

// Sizing: a buffer has room for the compressed size times the ratio, plus
// the headroom franz-go's read into it wants, with the ratio assumed
// until a batch was read.
const (
	decompressHeadroom = 1024
	assumedRatio       = 4
	minDecompressBytes = 64 << 10
)

// NewDecompressPool returns an empty DecompressPool.
func NewDecompressPool() *DecompressPool {
	d := &DecompressPool{}
	d.ratio.Store(math.Float64bits(assumedRatio))
	return d
}

// GetDecompressBytes implements kgo.PoolDecompressBytes: a buffer of room
// for compressed once decompressed, from the pool when one there is large
// enough.
func (d *DecompressPool) GetDecompressBytes(compressed []byte, _ kgo.CompressionCodecType) []byte {
	// An eighth more than the ratio says: a batch that does not fit is
	// copied into a larger buffer as it is read.
	want := max(int(float64(len(compressed))*math.Float64frombits(d.ratio.Load())*9/8)+decompressHeadroom, minDecompressBytes)
	if b, ok := d.buffers.Get().(*[]byte); ok {
		if cap(*b) >= want {
			return (*b)[:0]
		}
		d.buffers.Put(b) // for a smaller batch
	}
	return make([]byte, 0, want)
}

// PutDecompressBytes implements kgo.PoolDecompressBytes.
func (d *DecompressPool) PutDecompressBytes(b []byte) { d.buffers.Put(&b) }

// OnFetchBatchRead implements kgo.HookFetchBatchRead: it keeps the ratio
// of decompressed to compressed bytes, the largest one seen, decaying by
// an eighth towards each smaller one.
func (d *DecompressPool) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	if m.CompressedBytes <= 0 || m.CompressedBytes == m.UncompressedBytes {
		return // not compressed
	}
	seen := float64(m.UncompressedBytes) / float64(m.CompressedBytes)
	for {
		old := d.ratio.Load()
		r := math.Float64frombits(old)
		next := max(seen, r-(r-seen)/8)
		if d.ratio.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}
