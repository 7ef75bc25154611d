package kafka

import (
	"errors"
	"fmt"

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
// produces with c.
func (c Compression) ProducerOpt() kgo.Opt { return kgo.ProducerBatchCompression(c.Codec()) }

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
