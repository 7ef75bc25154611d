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

// Avro encode and decode of each record kind, through the Confluent wire format.
func BenchmarkSerde(b *testing.B) {
	s, _ := newSerde(b)
	ctx := context.Background()
	for _, size := range []int{1 << 10, 16 << 10, 192 << 10} {
		ch := benchChange(size)
		b.Run("EncodeChange/"+sizeName(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := s.EncodeChange(&ch); err != nil {
					b.Fatal(err)
				}
			}
		})
		wire, _ := s.EncodeChange(&ch)
		b.Run("DecodeChange/"+sizeName(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := s.DecodeChange(ctx, wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	st := State{Namespace: "shop-eu", ProductID: "123456", Fields: benchChange(0).Fields, Raw: benchChange(1 << 10).Raw, Version: 42, ChangeCount: 3, UpdatedAt: time.Now()}
	b.Run("EncodeState/1KB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.EncodeState(&st); err != nil {
				b.Fatal(err)
			}
		}
	})
	sw, _ := s.EncodeState(&st)
	b.Run("DecodeState/1KB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.DecodeState(ctx, sw); err != nil {
				b.Fatal(err)
			}
		}
	})
	up := Update{Namespace: "shop-eu", ProductID: "123456", ChangeCount: 5, Version: 42, FirstReceivedAt: time.Now(), LastReceivedAt: time.Now(), EmittedAt: time.Now(), State: &st}
	b.Run("EncodeUpdate/1KB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.EncodeUpdate(&up); err != nil {
				b.Fatal(err)
			}
		}
	})
	uw, _ := s.EncodeUpdate(&up)
	b.Run("DecodeUpdate/1KB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.DecodeUpdate(ctx, uw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func sizeName(n int) string { return strconv.Itoa(n>>10) + "KB" }
