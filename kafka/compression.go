package kafka

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Compression is the codec of the record batches a producer writes
// (kafka.compression). Parse a configured name once with ParseCompression
// and pass the value on. The zero value is lz4, the default.
type Compression uint8

// The codecs productstream writes with.
const (
	CompressionLZ4 Compression = iota // the default
	CompressionSnappy
	CompressionZstd
	CompressionGzip
	CompressionNone
)

// compressionNames are the configured names, by codec.
var compressionNames = [...]string{
	CompressionLZ4:    "lz4",
	CompressionSnappy: "snappy",
	CompressionZstd:   "zstd",
	CompressionGzip:   "gzip",
	CompressionNone:   "none",
}

// ErrUnknownCompression surfaces from ParseCompression (and so from
// UnmarshalText) for a name that is not a codec.
var ErrUnknownCompression = errors.New("unknown compression codec")

// ParseCompression returns the codec a configured name stands for: lz4
// (also for ""), snappy, zstd, gzip or none. Any other name is an error
// wrapping ErrUnknownCompression.
func ParseCompression(name string) (Compression, error) {
	if name == "" {
		return CompressionLZ4, nil
	}
	for c, n := range compressionNames {
		if n == name {
			return Compression(c), nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrUnknownCompression, name)
}

// String returns the codec's configured name.
func (c Compression) String() string {
	if int(c) < len(compressionNames) {
		return compressionNames[c]
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// Codec is franz-go's codec for c.
func (c Compression) Codec() kgo.CompressionCodec {
	switch c {
	case CompressionSnappy:
		return kgo.SnappyCompression()
	case CompressionZstd:
		return kgo.ZstdCompression()
	case CompressionGzip:
		return kgo.GzipCompression()
	case CompressionNone:
		return kgo.NoCompression()
	default:
		return kgo.Lz4Compression()
	}
}

// ProducerOpt is the client option that compresses every batch the client
// produces with c. lz4 batches are written by NewLZ4Compressor.
func (c Compression) ProducerOpt() kgo.Opt {
	if c == CompressionLZ4 {
		return kgo.WithCompressor(NewLZ4Compressor())
	}
	return kgo.ProducerBatchCompression(c.Codec())
}

// LZ4Compressor writes each batch as one lz4 frame at the fastest level, in
// 64 KiB blocks and without the frame's optional content checksum, as
// Kafka's Java producer writes them.
//
//   - The block size is what a reader allocates to decode a frame.
//     franz-go's default writes 4 MiB blocks, so every lz4 reader made
//     afresh allocates and clears 4 MiB, whatever the batch's size; the
//     embedded broker of `dev` and the tests makes one for every batch it
//     compacts, and spent its time there. An lz4 match reaches back at most
//     64 KiB, so smaller blocks cost little in size.
//   - A record batch already carries a CRC-32C of its compressed bytes,
//     which brokers and consumers check; the frame's xxHash32 of the
//     uncompressed bytes was the larger part of lz4's cost in the
//     processor's profile.
//
// Readers take frames of any block size, with or without the checksum.
// Safe for concurrent use.
type LZ4Compressor struct{ writers sync.Pool }

// NewLZ4Compressor returns an LZ4Compressor.
func NewLZ4Compressor() *LZ4Compressor {
	c := &LZ4Compressor{}
	c.writers.New = func() any {
		w := lz4.NewWriter(nil)
		// Every option is valid for a Writer, so Apply cannot fail.
		_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ChecksumOption(false), lz4.CompressionLevelOption(lz4.Fast))
		return w
	}
	return c
}

// Compress implements kgo.Compressor: src as an lz4 frame in dst.
func (c *LZ4Compressor) Compress(dst *bytes.Buffer, src []byte, _ ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	w := c.writers.Get().(*lz4.Writer)
	defer c.writers.Put(w)
	w.Reset(dst)
	if _, err := w.Write(src); err != nil {
		return nil, kgo.CodecError
	}
	if err := w.Close(); err != nil {
		return nil, kgo.CodecError
	}
	return dst.Bytes(), kgo.CodecLz4
}

// MarshalText returns the codec's configured name.
func (c Compression) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a configured name as ParseCompression does, so a
// Compression can be decoded straight from a config file.
func (c *Compression) UnmarshalText(b []byte) error {
	v, err := ParseCompression(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
