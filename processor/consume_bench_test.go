package processor

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// The whole per-change path on the loop's side of a poll, without Kafka:
// decoding (with the dedupe fingerprint), the dedupe check, merging,
// remembering and buffering. 1,000 keys take 1 KB changes in turn, each
// with an event id of its own, so that every key's memory is full and
// every check scans all of it. "dedupe=0" is the processor without the
// memory.
func BenchmarkConsume(b *testing.B) {
	names := topics.For("t.")
	serde := newSerde(b, names)
	const keys, perKey = 1000, 32
	values := make([][]byte, keys*perKey)
	recKeys := make([][]byte, keys)
	pad := fmt.Sprintf("%0*d", 1<<10, 0)
	for i := range values {
		k := strconv.Itoa(i % keys)
		ch := schemas.Change{EventID: "msg_" + strconv.Itoa(i), Source: "s", Provider: "standardwebhooks", Namespace: "ns",
			EventType: "product.updated", Resource: "product", ProductID: k, ReceivedAt: t0,
			Fields: schemas.Fields{Price: str(strconv.Itoa(i))}, Raw: fmt.Sprintf(`{"id":%q,"price":%d,"pad":%q}`, k, i, pad)}
		v, err := serde.EncodeChange(&ch)
		if err != nil {
			b.Fatal(err)
		}
		values[i], recKeys[i%keys] = v, []byte(ch.Key())
	}
	for _, n := range []int{0, 16} {
		b.Run("dedupe="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			cfg := Config{Brokers: []string{"x:1"}, Topics: names, Group: "g", QuietPeriod: time.Hour, MaxDelay: time.Hour, Serde: serde,
				MaxPendingKeys: keys, MaxJSONDepth: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DedupeEventIDs: n}
			if err := validate(&cfg); err != nil {
				b.Fatal(err)
			}
			p := newProcessor(cfg)
			p.parts[0] = &partition{states: map[string]*entry{}, next: -1}
			i := 0
			for b.Loop() {
				d := decoded{rec: &kgo.Record{Key: recKeys[i%keys], Value: values[i%len(values)], Offset: int64(i)}}
				p.decodeChange(&d, nil)
				p.consume(&d)
				i++
			}
			if got := p.parts[0].states["p"+string(recKeys[0])].state.ChangeCount; got == 0 {
				b.Fatal("nothing applied")
			}
		})
	}
}

// What the memory adds per change, apart: the fingerprint of a 1 KB change
// (taken while decoding, in parallel), the check against a full memory of
// 16 (a miss, the common case), and remembering.
func BenchmarkDedupe(b *testing.B) {
	ch := schemas.Change{EventID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", Source: "s",
		Raw: fmt.Sprintf(`{"id":"p","pad":"%0*d"}`, 1<<10, 0)}
	var st schemas.State
	for i := range 16 {
		remember(&st, int64(i)*2+1, 16)
	}
	b.Run("fingerprint 1KB", func(b *testing.B) {
		for b.Loop() {
			fingerprint(&ch)
		}
	})
	b.Run("check 16", func(b *testing.B) {
		for b.Loop() {
			if applied(&st, ch.EventID, 2) {
				b.Fatal("found")
			}
		}
	})
	b.Run("remember 16", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			remember(&st, int64(i), 16)
		}
	})
}
