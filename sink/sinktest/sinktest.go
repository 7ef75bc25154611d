// Package sinktest is the conformance suite every sink.Sink runs against its
// real backend: the contract in sink.Sink's doc comment, case by case.
//
// The suite puts a proxy of its own between the sink and the backend, so it
// can cut the backend off (every connection reset, new ones closed at once)
// and, for HTTP backends, answer 429 and 503 in its place, without touching
// the backend other tests share.
package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/sink"
)

// Backend is what the suite needs from one sink kind.
type Backend struct {
	// Addr is the real backend's host:port.
	Addr string
	// HTTP says the backend speaks HTTP/1.1 in plain text: the suite's
	// proxy then also injects 429 and 503 answers.
	HTTP bool
	// Open returns a sink that reaches the backend at addr (the suite's
	// proxy) and writes to a fresh, empty target of its own (a new index,
	// table, key prefix or receiver path). Calling it again with the same
	// target name reaches the same data: the suite reopens a target to act
	// out a restart.
	Open func(t *testing.T, addr, target string) sink.Sink
	// Held reads what the backend holds for key in s's target directly, not
	// through s.
	Held func(t *testing.T, s sink.Sink, key string) (sink.Held, bool)
	// Poison returns a copy of rec that the backend (or the sink itself)
	// refuses for good, preparing s's target for it if need be.
	Poison func(t *testing.T, s sink.Sink, rec sink.Record) sink.Record
	// ForgetDeletes makes the backend drop its own memory of deletes
	// (OpenSearch's index.gc_deletes), where it has one; nil: it has none.
	ForgetDeletes func(t *testing.T, s sink.Sink)
}

// Run runs every conformance case against b.
func Run(t *testing.T, b Backend) {
	t.Helper()
	cases := []struct {
		name string
		run  func(t *testing.T, c *suite)
	}{
		{"AppliesNewKeysAndReadsThemBack", appliesNewKeys},
		{"DuplicateBatchIsANoOp", duplicateBatch},
		{"StaleWriteAfterNewerIsRefused", staleAfterNewer},
		{"DeleteIsSoftAndVersioned", deleteIsSoft},
		{"StaleWriteAfterDeleteDoesNotResurrect", noResurrection},
		{"NewerWriteAfterDeleteRestores", newerAfterDelete},
		{"PartialFailureSpeaksPerRecord", partialFailure},
		{"OutageFailsTheBatchAndRecovers", outage},
		{"StreamRidesOutAnOutage", streamAcrossOutage},
		{"RepeatAfterCrashIsHarmless", repeatAfterCrash},
		{"CanceledContextReturnsPromptly", canceled},
	}
	if b.HTTP {
		cases = append(cases, struct {
			name string
			run  func(t *testing.T, c *suite)
		}{"TransientStatusesFailTheBatch", transientStatuses})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newSuite(t, b)
			tc.run(t, c)
		})
	}
}

// suite is one case's fresh target behind a proxy of its own.
type suite struct {
	b      Backend
	proxy  *Proxy
	target string
	sink   sink.Sink
}

func newSuite(t *testing.T, b Backend) *suite {
	t.Helper()
	p := NewProxy(t, b.Addr, b.HTTP)
	target := strings.ToLower(fmt.Sprintf("t%d_%s", time.Now().UnixNano()%1e9, sanitize(t.Name())))
	if len(target) > 48 {
		target = target[:48]
	}
	c := &suite{b: b, proxy: p, target: target}
	c.sink = b.Open(t, p.Addr(), target)
	t.Cleanup(func() { _ = c.sink.Close() })
	return c
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s[strings.LastIndexByte(s, '/')+1:])
}

// Product returns a record for key "ns:id" at version with a price.
func Product(id string, version int64, price string) sink.Record {
	doc, _ := json.Marshal(map[string]any{"namespace": "ns", "product_id": id, "version": version,
		"fields": map[string]any{"title": "Product " + id, "price": price, "currency": "EUR"}})
	return sink.Record{Key: "ns:" + id, Namespace: "ns", ID: id, Version: version, Doc: doc,
		UpdatedAt: time.Now().UTC().Truncate(time.Millisecond), Origin: sink.Origin{Topic: "products", Offset: version}}
}

// Deleted returns a tombstone for key "ns:id" at version.
func Deleted(id string, version int64) sink.Record {
	return sink.Record{Key: "ns:" + id, Namespace: "ns", ID: id, Version: version, Deleted: true,
		UpdatedAt: time.Now().UTC().Truncate(time.Millisecond), Origin: sink.Origin{Topic: "products", Offset: version}}
}

func (c *suite) write(t *testing.T, recs ...sink.Record) []sink.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.sink.Write(ctx, recs)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(res) != len(recs) {
		t.Fatalf("Write returned %d results for %d records", len(res), len(recs))
	}
	return res
}

func (c *suite) expectOutcomes(t *testing.T, res []sink.Result, want ...sink.Outcome) {
	t.Helper()
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("record %d: outcome %v (err %v), want %v", i, r.Outcome, r.Err, want[i])
		}
	}
}

// expectHeld checks what the backend holds for rec's key: rec itself.
func (c *suite) expectHeld(t *testing.T, rec sink.Record) {
	t.Helper()
	h, ok := c.b.Held(t, c.sink, rec.Key)
	if !ok {
		t.Fatalf("%s: the backend holds nothing, want version %d", rec.Key, rec.Version)
	}
	if h.Version != rec.Version || h.Deleted != rec.Deleted {
		t.Fatalf("%s: the backend holds version %d deleted=%v, want version %d deleted=%v", rec.Key, h.Version, h.Deleted, rec.Version, rec.Deleted)
	}
	if !rec.Deleted && !SameJSON(h.Doc, rec.Doc) {
		t.Fatalf("%s: the backend holds %s, want %s", rec.Key, h.Doc, rec.Doc)
	}
}

// SameJSON reports whether a and b hold the same JSON value.
func SameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func appliesNewKeys(t *testing.T, c *suite) {
	// Version 0 is a real version: the first offset of changes.
	recs := []sink.Record{Product("1", 10, "9.99"), Product("2", 11, "19.99"), Product("3", 12, "0.10"), Product("0", 0, "5.00")}
	c.expectOutcomes(t, c.write(t, recs...), sink.Applied, sink.Applied, sink.Applied, sink.Applied)
	for _, r := range recs {
		c.expectHeld(t, r)
	}
	if _, ok := c.b.Held(t, c.sink, "ns:absent"); ok {
		t.Fatal("the backend holds a key never written")
	}
}

func duplicateBatch(t *testing.T, c *suite) {
	recs := []sink.Record{Product("1", 10, "9.99"), Deleted("2", 11)}
	c.write(t, recs...)
	c.expectOutcomes(t, c.write(t, recs...), sink.Applied, sink.Applied)
	c.expectHeld(t, recs[0])
	c.expectHeld(t, recs[1])
}

func staleAfterNewer(t *testing.T, c *suite) {
	newer := Product("1", 20, "2.00")
	c.write(t, newer)
	c.expectOutcomes(t, c.write(t, Product("1", 19, "1.00")), sink.Stale)
	c.expectHeld(t, newer)
}

func deleteIsSoft(t *testing.T, c *suite) {
	c.write(t, Product("1", 5, "1.00"))
	del := Deleted("1", 7)
	c.expectOutcomes(t, c.write(t, del), sink.Applied)
	c.expectHeld(t, del)
	// A delete of a key never seen is kept too, so a late older write of it
	// stays out.
	c.expectOutcomes(t, c.write(t, Deleted("9", 3)), sink.Applied)
	c.expectOutcomes(t, c.write(t, Product("9", 2, "1.00")), sink.Stale)
	c.expectHeld(t, Deleted("9", 3))
}

func noResurrection(t *testing.T, c *suite) {
	c.write(t, Product("1", 5, "1.00"))
	del := Deleted("1", 7)
	c.write(t, del)
	c.expectOutcomes(t, c.write(t, Product("1", 6, "1.50")), sink.Stale)
	c.expectHeld(t, del)
	if c.b.ForgetDeletes != nil {
		c.b.ForgetDeletes(t, c.sink)
		c.expectOutcomes(t, c.write(t, Product("1", 6, "1.50")), sink.Stale)
		c.expectHeld(t, del)
	}
}

func newerAfterDelete(t *testing.T, c *suite) {
	c.write(t, Product("1", 5, "1.00"))
	c.write(t, Deleted("1", 7))
	back := Product("1", 9, "3.00")
	c.expectOutcomes(t, c.write(t, back), sink.Applied)
	c.expectHeld(t, back)
}

func partialFailure(t *testing.T, c *suite) {
	good1, good2 := Product("1", 10, "1.00"), Product("3", 12, "3.00")
	res := c.write(t, good1, c.b.Poison(t, c.sink, Product("2", 11, "2.00")), good2)
	c.expectOutcomes(t, res, sink.Applied, sink.Failed, sink.Applied)
	if !sink.IsPermanent(res[1].Err) {
		t.Fatalf("the refused record's error %v is not permanent", res[1].Err)
	}
	c.expectHeld(t, good1)
	c.expectHeld(t, good2)
	if _, ok := c.b.Held(t, c.sink, "ns:2"); ok {
		t.Fatal("the refused record was stored")
	}
}

func outage(t *testing.T, c *suite) {
	c.write(t, Product("1", 1, "1.00")) // connections are open before the outage
	c.proxy.Down()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.sink.Write(ctx, []sink.Record{Product("1", 2, "2.00")})
	if err == nil {
		t.Fatalf("Write during an outage returned no error (results %v)", res)
	}
	if sink.IsPermanent(err) {
		t.Fatalf("an outage is reported as permanent: %v", err)
	}
	c.proxy.Up()
	// The next try, like the runner's, succeeds once the backend is back.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err = c.sink.Write(ctx, []sink.Record{Product("1", 2, "2.00")})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Write after the outage: %v", err)
	}
	c.expectOutcomes(t, res, sink.Applied)
	c.expectHeld(t, Product("1", 2, "2.00"))
}

// OutageEnv names the environment variable that sets how long
// StreamRidesOutAnOutage keeps the backend down (a Go duration; default
// 20s).
const OutageEnv = "PRODUCTSTREAM_SINK_OUTAGE"

// streamAcrossOutage writes a stream of batches, as the runner does
// (a failed batch is tried again until it succeeds), while the backend is
// down for a while in the middle: no batch fails for good, and at the end
// the backend holds every key at its last version.
func streamAcrossOutage(t *testing.T, c *suite) {
	outage := 20 * time.Second
	if v := os.Getenv(OutageEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", OutageEnv, err)
		}
		outage = d
	}
	const keys, batches = 20, 30
	ctx, cancel := context.WithTimeout(context.Background(), outage+2*time.Minute)
	defer cancel()
	var failures int
	go func() {
		time.Sleep(200 * time.Millisecond)
		c.proxy.Down()
		time.Sleep(outage)
		c.proxy.Up()
	}()
	for b := range batches {
		batch := make([]sink.Record, keys)
		for k := range keys {
			batch[k] = Product(strconv.Itoa(k), int64(b+1), fmt.Sprintf("%d.%02d", b, k))
		}
		for {
			res, err := c.sink.Write(ctx, batch)
			if err == nil {
				for i, r := range res {
					if r.Outcome == sink.Failed && sink.IsPermanent(r.Err) {
						t.Fatalf("batch %d record %d failed for good: %v", b, i, r.Err)
					}
					if r.Outcome == sink.Failed {
						err = r.Err // tried again, whole: the guard makes it harmless
					}
				}
			}
			if err == nil {
				break
			}
			if sink.IsPermanent(err) {
				t.Fatalf("batch %d: the outage is reported as permanent: %v", b, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("batch %d: still failing after the outage: %v", b, err)
			}
			failures++
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if failures == 0 {
		t.Fatal("no write failed: the outage fell outside the stream")
	}
	for k := range keys {
		c.expectHeld(t, Product(strconv.Itoa(k), batches, fmt.Sprintf("%d.%02d", batches-1, k)))
	}
}

func repeatAfterCrash(t *testing.T, c *suite) {
	batch := []sink.Record{Product("1", 10, "1.00"), Product("2", 11, "2.00"), Deleted("3", 12)}
	c.write(t, batch...)
	// The runner died before committing: a new process writes the same
	// batch again, then the next one.
	_ = c.sink.Close()
	c.sink = c.b.Open(t, c.proxy.Addr(), c.target)
	c.expectOutcomes(t, c.write(t, batch...), sink.Applied, sink.Applied, sink.Applied)
	next := Product("1", 13, "1.10")
	c.write(t, next)
	c.expectHeld(t, next)
	c.expectHeld(t, batch[1])
	c.expectHeld(t, batch[2])
}

func canceled(t *testing.T, c *suite) {
	c.proxy.Stall()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.sink.Write(ctx, []sink.Record{Product("1", 1, "1.00")})
	if err == nil {
		t.Fatal("Write to a backend that never answers returned no error")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Write returned %v after its context ended", el)
	}
	c.proxy.Up()
}

func transientStatuses(t *testing.T, c *suite) {
	for _, status := range []int{429, 503} {
		c.proxy.Answer(status, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := c.sink.Write(ctx, []sink.Record{Product("1", 1, "1.00")})
		cancel()
		if err == nil || sink.IsPermanent(err) {
			t.Fatalf("status %d: Write returned %v, want a transient error", status, err)
		}
		var ra *sink.RetryAfter
		if status == 429 && (!errors.As(err, &ra) || ra.Wait != time.Second) {
			t.Fatalf("429 with Retry-After: 1: error %v carries no one-second RetryAfter", err)
		}
	}
	c.expectOutcomes(t, c.write(t, Product("1", 1, "1.00")), sink.Applied)
}
