//go:build unix

package processor

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The processor's whole cycle in each mode, without Kafka: a poll of 500
// changes (1 KB raw each, over 1,000 keys, so each key takes a change every
// other poll, all saying they occurred at the same time, so that each
// merges by occurred time and wins; a key's event ids repeat only after
// more changes than its dedupe memory holds) decoded on every CPU and
// merged, the keys that came due
// encoded as states and updates, and, exactly once, the changed pending
// entries encoded for the changelog and the due ones' tombstones. The wall
// clock advances 10 ms a poll: with a 50 ms quiet period and a 100 ms max
// delay, a key comes due after about five changes. cpu-ns/change is the
// process's CPU time per change, the decoding goroutines included.
func BenchmarkCycle(b *testing.B) {
	names := topics.For("t.")
	serde := newSerde(b, names)
	const keys, perKey, poll = 1000, 20, 500
	values := make([][]byte, keys*perKey)
	recKeys := make([][]byte, keys)
	pad := fmt.Sprintf("%0*d", 1<<10, 0)
	for i := range values {
		k := strconv.Itoa(i % keys)
		ch := schemas.Change{EventID: "msg_" + strconv.Itoa(i), Source: "s", Provider: "standardwebhooks", Namespace: "ns",
			EventType: "product.updated", Resource: "product", ProductID: k, ReceivedAt: t0, OccurredAt: t0,
			Fields: schemas.Fields{Price: str(strconv.Itoa(i)), Title: str("Trail shoe " + k)},
			Raw:    fmt.Sprintf(`{"id":%q,"price":%d,"title":"Trail shoe","tags":["a","b"],"pad":%q}`, k, i, pad)}
		v, err := serde.EncodeChange(&ch)
		if err != nil {
			b.Fatal(err)
		}
		values[i], recKeys[i%keys] = v, []byte(ch.Key())
	}
	for _, eos := range []bool{false, true} {
		name := map[bool]string{false: "at-least-once", true: "exactly-once"}[eos]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			cfg := Config{Brokers: []string{"x:1"}, Topics: names, Group: "g", QuietPeriod: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
				Serde: serde, MaxPendingKeys: keys, MaxJSONDepth: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				DedupeEventIDs: 16, ExactlyOnce: eos}
			if err := validate(&cfg); err != nil {
				b.Fatal(err)
			}
			p := newProcessor(cfg)
			clock := t0
			p.now = func() time.Time { return clock }
			pt := &partition{states: map[string]*entry{}, next: -1}
			p.parts[0] = pt
			offset, written := int64(0), 0
			cpu0 := cpuTime()
			for b.Loop() {
				recs := make([]*kgo.Record, poll)
				for j := range recs {
					i := int(offset) % len(values)
					recs[j] = &kgo.Record{Topic: names.Changes, Key: recKeys[i%keys], Value: values[i], Offset: offset}
					offset++
				}
				fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: names.Changes, Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs}}}}}}
				p.consumeFetches(fetches, nil)
				due := p.due()
				records, err := p.outputs(due)
				if err != nil {
					b.Fatal(err)
				}
				if m, ok := p.mode.(*exactlyOnce); ok {
					for _, d := range due {
						records = append(records, &kgo.Record{Topic: p.pending, Key: []byte(d.key), Partition: d.partition})
						delete(m.dirty, d.key)
					}
					if records, err = m.pendingRecords(records); err != nil {
						b.Fatal(err)
					}
					clear(m.dirty)
				}
				for _, d := range due {
					d.flushed = true
				}
				p.written(records)
				pt.watermark()
				written += len(records)
				clock = clock.Add(10 * time.Millisecond)
			}
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(offset), "cpu-ns/change")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(offset), "ns/change")
			b.ReportMetric(float64(written)/float64(offset), "records/change")
			if p.metrics.emittedUpdates == nil || pt.states["p"+string(recKeys[0])].state.ChangeCount == 0 {
				b.Fatal("nothing applied")
			}
		})
	}
}
