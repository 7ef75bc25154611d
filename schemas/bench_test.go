package schemas

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

func benchChange(rawSize int) Change {
	now := time.Now()
	return Change{EventID: "sha256:0123456789abcdef0123456789abcdef", Source: "lisa-main", Provider: "lisa", Namespace: "shop-eu",
		EventType: "product.updated", Resource: "product", ProductID: "123456", ReceivedAt: now, OccurredAt: now,
		Fields: Fields{Title: str("Trail shoe"), Price: str("19.99"), Currency: str("EUR")},
		Raw:    `{"productId":"123456","pad":"` + strings.Repeat("x", rawSize) + `"}`}
}

// benchCodec benchmarks encode as Encode<kind>/<size> and decode of its
// output as Decode<kind>/<size>, reporting allocations and rawSize bytes
// per operation. Both are checked once before timing.
func benchCodec(b *testing.B, kind string, rawSize int, encode func() ([]byte, error), decode func([]byte) error) {
	wire, err := encode()
	if err != nil {
		b.Fatalf("encode %s: %v", kind, err)
	}
	if err := decode(wire); err != nil {
		b.Fatalf("decode %s: %v", kind, err)
	}
	b.Run("Encode"+kind+"/"+sizeName(rawSize), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(rawSize))
		for b.Loop() {
			if _, err := encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode"+kind+"/"+sizeName(rawSize), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(rawSize))
		for b.Loop() {
			if err := decode(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Avro encode and decode of each record kind (ProductChange at 1, 16 and
// 192 KB of raw payload; ProductState, ProductUpdate and AnalyticsEvent at
// 1 KB), through the Confluent wire format. Decoding finds the codec by
// schema ID in the Serde's cache: no registry request is timed.
func BenchmarkSerde(b *testing.B) {
	s, _ := newSerde(b)
	ctx := context.Background()
	for _, size := range []int{1 << 10, 16 << 10, 192 << 10} {
		ch := benchChange(size)
		benchCodec(b, "Change", size,
			func() ([]byte, error) { return s.EncodeChange(&ch) },
			func(w []byte) error { _, err := s.DecodeChange(ctx, w); return err })
	}
	st := State{Namespace: "shop-eu", ProductID: "123456", Fields: benchChange(0).Fields, Raw: benchChange(1 << 10).Raw, Version: 42, ChangeCount: 3, UpdatedAt: time.Now()}
	benchCodec(b, "State", 1<<10,
		func() ([]byte, error) { return s.EncodeState(&st) },
		func(w []byte) error { _, err := s.DecodeState(ctx, w); return err })
	up := Update{Namespace: "shop-eu", ProductID: "123456", ChangeCount: 5, Version: 42, FirstReceivedAt: time.Now(), LastReceivedAt: time.Now(), EmittedAt: time.Now(), State: &st}
	benchCodec(b, "Update", 1<<10,
		func() ([]byte, error) { return s.EncodeUpdate(&up) },
		func(w []byte) error { _, err := s.DecodeUpdate(ctx, w); return err })
	ev := Event{EventID: "sha256:0123456789abcdef0123456789abcdef", Source: "aic", Provider: "aicommerce", Namespace: "shop-eu",
		EventType: "chat.message.received", Subject: "sess_abc123", ReceivedAt: time.Now(), OccurredAt: time.Now(), Raw: benchChange(1 << 10).Raw}
	benchCodec(b, "Event", 1<<10,
		func() ([]byte, error) { return s.EncodeEvent(&ev) },
		func(w []byte) error { _, err := s.DecodeEvent(ctx, w); return err })
}

func sizeName(n int) string { return strconv.Itoa(n>>10) + "KB" }
