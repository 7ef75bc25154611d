package processor

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/productstream/productstream/schemas"
)

// The coalescer's add: a new key, and a key already buffered (a burst).
func BenchmarkCoalescerAdd(b *testing.B) {
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = "shop-eu:" + strconv.Itoa(i)
	}
	b.Run("new keys", func(b *testing.B) {
		b.ReportAllocs()
		c := newCoalescer(time.Second, 30*time.Second)
		i := 0
		for b.Loop() {
			if i == len(keys) {
				c = newCoalescer(time.Second, 30*time.Second)
				i = 0
			}
			c.add(keys[i], 0, int64(i), t0, t0, false)
			i++
		}
	})
	b.Run("burst on 1000 hot keys", func(b *testing.B) {
		b.ReportAllocs()
		c := newCoalescer(time.Second, 30*time.Second)
		i := 0
		for b.Loop() {
			c.add(keys[i%1000], 0, int64(i), t0, t0.Add(time.Duration(i)), false)
			i++
		}
	})
}

// Popping due keys, per key.
func BenchmarkCoalescerFlush(b *testing.B) {
	b.ReportAllocs()
	const n = 10_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "shop-eu:" + strconv.Itoa(i)
	}
	for b.Loop() {
		b.StopTimer()
		c := newCoalescer(time.Second, 30*time.Second)
		for i, k := range keys {
			c.add(k, 0, int64(i), t0, t0.Add(time.Duration(i)), false)
		}
		b.StartTimer()
		if got := len(c.popDue(t0.Add(time.Hour))); got != n {
			b.Fatal(got)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
}

// Merging a change into a state: typed fields and raw JSON. "render" also
// renders the merged raw JSON after every change, as a flush does (the
// worst case: no coalescing); "occurred" merges by occurred time.
func BenchmarkStateMerge(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		raw := fmt.Sprintf(`{"productId":"p","price":1,"pad":"%0*d"}`, size, 0)
		for _, variant := range []string{"", "render", "occurred"} {
			name := strconv.Itoa(size>>10) + "KB"
			if variant != "" {
				name += "/" + variant
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(raw)))
				var e *entry
				i := int64(0)
				for b.Loop() {
					ch := schemas.Change{Namespace: "ns", ProductID: "p", Raw: raw, Fields: schemas.Fields{Price: new(string)}}
					if variant == "occurred" {
						ch.OccurredAt = t0.Add(time.Duration(i) * time.Millisecond)
					}
					e = apply(e, &ch, nil, i, func(schemas.Change) {})
					if variant == "render" {
						e.render()
					}
					i++
				}
			})
		}
	}
}

// Memory per pending key in the coalescer, beyond the merged state:
// measured with 1,000,000 pending keys.
func TestCoalescerMemoryPerPendingKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million keys")
	}
	const n = 1_000_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "shop-eu:" + strconv.Itoa(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newCoalescer(time.Second, 30*time.Second)
	for i, k := range keys {
		c.add(k, 0, int64(i), t0, t0, false)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("coalescer: %.0f bytes per pending key (key strings excluded: they belong to the state)", perKey)
	if c.len() != n {
		t.Fatal(c.len())
	}
}
