package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/sinktest"
)

// backend returns the real Redis's address and a client of the test's own.
func backend(t *testing.T) (string, *redis.Client) {
	t.Helper()
	addr := sinktest.StartBackend(t, "redis")
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return addr, c
}

// uniquePrefix is a key prefix no other test or run uses; its keys are
// deleted when the test ends.
func uniquePrefix(t *testing.T, c *redis.Client, extra string) string {
	base := fmt.Sprintf("t/%s/%d/", t.Name(), time.Now().UnixNano())
	removeKeys(t, c, base)
	return base + extra
}

// removeKeys deletes every key under prefix when the test ends.
func removeKeys(t *testing.T, c *redis.Client, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
		for iter.Next(ctx) {
			_ = c.Unlink(ctx, iter.Val()).Err()
		}
	})
}

func open(t *testing.T, addr, prefix string) *Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, config.SinkRedis{Addr: addr, KeyPrefix: prefix}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// heldAt reads the hash at key directly: found is false when there is no
// key or it is not a hash.
func heldAt(t *testing.T, c *redis.Client, key string) (sink.Held, bool) {
	t.Helper()
	ctx := ctxFor(t)
	typ, err := c.Type(ctx, key).Result()
	if err != nil {
		t.Fatalf("TYPE %s: %v", key, err)
	}
	if typ != "hash" {
		return sink.Held{}, false
	}
	fields, err := c.HGetAll(ctx, key).Result()
	if err != nil {
		t.Fatalf("HGETALL %s: %v", key, err)
	}
	h, err := parseHash(fields)
	if err != nil {
		t.Fatalf("%s holds %v: %v", key, fields, err)
	}
	if _, err := time.Parse(time.RFC3339Nano, fields["updated_at"]); err != nil || len(fields["updated_at"]) != len("2006-01-02T15:04:05.000Z") {
		t.Fatalf("%s: updated_at %q is not RFC 3339 with milliseconds", key, fields["updated_at"])
	}
	if h.Deleted && fields["state"] != "" {
		t.Fatalf("%s: a deleted marker holds state %q", key, fields["state"])
	}
	return h, true
}

// livePrefix reads the pointer as a reader does.
func livePrefix(t *testing.T, c *redis.Client, prefix string) string {
	t.Helper()
	p, err := c.HGet(ctxFor(t), prefix+"@generations", "live_prefix").Result()
	if err != nil {
		t.Fatalf("reading the pointer of %q: %v", prefix, err)
	}
	return p
}

func TestConformance(t *testing.T) {
	addr, c := backend(t)
	sinktest.Run(t, sinktest.Backend{
		Addr: addr,
		Open: func(t *testing.T, proxy, target string) sink.Sink {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			removeKeys(t, c, "t/"+target+"/")
			s, err := New(ctx, config.SinkRedis{Addr: proxy, KeyPrefix: "t/" + target + "/"}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return s
		},
		Held: func(t *testing.T, s sink.Sink, key string) (sink.Held, bool) {
			return heldAt(t, c, livePrefix(t, c, s.(*Sink).prefix)+key)
		},
		Poison: func(t *testing.T, s sink.Sink, rec sink.Record) sink.Record {
			key := livePrefix(t, c, s.(*Sink).prefix) + rec.Key
			if err := c.Set(ctxFor(t), key, "someone else's string", 0).Err(); err != nil {
				t.Fatalf("SET %s: %v", key, err)
			}
			return rec
		},
	})
}

// The refused record of the conformance case says why.
func TestWrongTypeIsPermanentAndForeign(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	if err := c.Set(ctxFor(t), s.prefix+"ns:2", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctxFor(t), s.prefix+"ns:3", "colour", "red").Err(); err != nil {
		t.Fatal(err)
	}
	res, err := s.Write(ctxFor(t), []sink.Record{sinktest.Product("1", 1, "1.00"), sinktest.Product("2", 1, "2.00"), sinktest.Product("3", 1, "3.00")})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if res[0].Outcome != sink.Applied {
		t.Fatalf("record 0: %v %v", res[0].Outcome, res[0].Err)
	}
	for _, i := range []int{1, 2} {
		if res[i].Outcome != sink.Failed || !sink.IsPermanent(res[i].Err) || !errors.Is(res[i].Err, ErrForeignValue) {
			t.Fatalf("record %d: %v %v, want a permanent ErrForeignValue", i, res[i].Outcome, res[i].Err)
		}
	}
	if v, _ := c.HGetAll(ctxFor(t), s.prefix+"ns:3").Result(); len(v) != 1 {
		t.Fatalf("the foreign hash was changed: %v", v)
	}
	if _, _, err := s.Held(ctxFor(t), "ns:2"); !errors.Is(err, ErrForeignValue) {
		t.Fatalf("Held of a string key: %v, want ErrForeignValue", err)
	}
}

// A record that is not deleted but carries no value is refused before
// anything is sent. (A Doc is JSON by the Record contract, rendered by the
// runner's decoder, and stored as it is.)
func TestMissingDocIsPermanent(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	bad := sinktest.Product("2", 1, "1.00")
	bad.Doc = nil
	res, err := s.Write(ctxFor(t), []sink.Record{sinktest.Product("1", 1, "1.00"), bad})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if res[0].Outcome != sink.Applied {
		t.Fatalf("record 0: %v %v", res[0].Outcome, res[0].Err)
	}
	if res[1].Outcome != sink.Failed || !sink.IsPermanent(res[1].Err) || !errors.Is(res[1].Err, ErrInvalidDoc) {
		t.Fatalf("record 1: %v %v, want a permanent ErrInvalidDoc", res[1].Outcome, res[1].Err)
	}
	if n, _ := c.Exists(ctxFor(t), s.prefix+"ns:2").Result(); n != 0 {
		t.Fatal("the invalid record was stored")
	}
}

// Versions compare exactly over the whole int64 range (Lua numbers are
// doubles, which cannot tell 2^53 from 2^53+1).
func TestVersionsCompareExactly(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	steps := []struct {
		version int64
		want    sink.Outcome
	}{
		{1 << 53, sink.Applied},
		{1<<53 + 1, sink.Applied},
		{1 << 53, sink.Stale},
		{999, sink.Stale},
		{1<<63 - 1, sink.Applied},
		{1<<63 - 2, sink.Stale},
		{1<<63 - 1, sink.Applied},
	}
	for _, st := range steps {
		res, err := s.Write(ctxFor(t), []sink.Record{sinktest.Product("1", st.version, "1.00")})
		if err != nil || res[0].Outcome != st.want {
			t.Fatalf("version %d: %v %v, want %v", st.version, res, err, st.want)
		}
	}
	neg := open(t, addr, uniquePrefix(t, c, "neg/"))
	for _, st := range []struct {
		version int64
		want    sink.Outcome
	}{{-10, sink.Applied}, {-11, sink.Stale}, {-5, sink.Applied}, {-10, sink.Stale}, {0, sink.Applied}, {-1, sink.Stale}, {7, sink.Applied}} {
		res, err := neg.Write(ctxFor(t), []sink.Record{sinktest.Product("1", st.version, "1.00")})
		if err != nil || res[0].Outcome != st.want {
			t.Fatalf("version %d: %v %v, want %v", st.version, res, err, st.want)
		}
	}
	h, found, err := s.Held(ctxFor(t), "ns:1")
	if err != nil || !found || h.Version != 1<<63-1 {
		t.Fatalf("Held: %+v %v %v", h, found, err)
	}
}

// One pipeline of 1000 records: new keys, equal versions and stale ones.
func TestLargeMixedBatch(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	var first []sink.Record
	for i := 0; i < 1000; i += 2 {
		first = append(first, sinktest.Product(strconv.Itoa(i), 100, "1.00"))
	}
	if _, err := s.Write(ctxFor(t), first); err != nil {
		t.Fatalf("first Write: %v", err)
	}
	batch := make([]sink.Record, 1000)
	want := make([]sink.Outcome, 1000)
	for i := range batch {
		switch {
		case i%2 == 1: // a new key
			batch[i], want[i] = sinktest.Product(strconv.Itoa(i), 50, "2.00"), sink.Applied
		case i%4 == 0: // an older version
			batch[i], want[i] = sinktest.Product(strconv.Itoa(i), 99, "2.00"), sink.Stale
		case i%8 == 2: // the version held
			batch[i], want[i] = sinktest.Product(strconv.Itoa(i), 100, "1.00"), sink.Applied
		default: // a newer delete
			batch[i], want[i] = sinktest.Deleted(strconv.Itoa(i), 101), sink.Applied
		}
	}
	start := time.Now()
	res, err := s.Write(ctxFor(t), batch)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	t.Logf("1000 records in %v", time.Since(start))
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Fatalf("record %d: %v (%v), want %v", i, r.Outcome, r.Err, want[i])
		}
		wantHeld := batch[i]
		if want[i] == sink.Stale {
			wantHeld = sinktest.Product(strconv.Itoa(i), 100, "1.00")
		}
		h, found := heldAt(t, c, s.prefix+batch[i].Key)
		if !found || h.Version != wantHeld.Version || h.Deleted != wantHeld.Deleted || (!h.Deleted && !sinktest.SameJSON(h.Doc, wantHeld.Doc)) {
			t.Fatalf("%s holds %+v (found %v), want version %d deleted %v", batch[i].Key, h, found, wantHeld.Version, wantHeld.Deleted)
		}
	}
}

// Redis lost its scripts (a restart, SCRIPT FLUSH): the next Write loads
// the script again and applies.
func TestNoScriptRecovery(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	if _, err := s.Write(ctxFor(t), []sink.Record{sinktest.Product("1", 1, "1.00")}); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctxFor(t)).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if ok, _ := c.ScriptExists(ctxFor(t), s.scripts.write.Hash()).Result(); len(ok) != 1 || ok[0] {
		t.Fatal("the write script is still loaded after SCRIPT FLUSH")
	}
	batch := []sink.Record{sinktest.Product("1", 2, "2.00"), sinktest.Product("2", 1, "1.00"), sinktest.Product("3", 0, "1.00")}
	res, err := s.Write(ctxFor(t), batch)
	if err != nil {
		t.Fatalf("Write after SCRIPT FLUSH: %v", err)
	}
	for i, r := range res {
		if r.Outcome != sink.Applied {
			t.Fatalf("record %d: %v %v", i, r.Outcome, r.Err)
		}
		if h, found := heldAt(t, c, s.prefix+batch[i].Key); !found || h.Version != batch[i].Version {
			t.Fatalf("%s holds %+v, want version %d", batch[i].Key, h, batch[i].Version)
		}
	}
	if ok, _ := c.ScriptExists(ctxFor(t), s.scripts.write.Hash()).Result(); len(ok) != 1 || !ok[0] {
		t.Fatal("the write script was not loaded again")
	}
}

// One batch of 450 records, three script calls: every record gets its own
// outcome, whatever its neighbours in the call, at the edges of a call too:
// new keys, equal and lower versions, newer writes and deletes, values that
// are not hashes, and hashes not this sink's.
func TestBatchAcrossChunks(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	const n = 450
	if n <= 2*chunkKeys {
		t.Fatalf("chunkKeys is %d: the batch must take three calls", chunkKeys)
	}
	id := strconv.Itoa
	var first []sink.Record
	for i := range n {
		if i%3 != 0 {
			first = append(first, sinktest.Product(id(i), 100, "1.00"))
		}
	}
	if _, err := s.Write(ctx, first); err != nil {
		t.Fatalf("first Write: %v", err)
	}
	// Keys not this sink's to write, each with what it holds: at the first
	// and last key of a call, and inside one.
	foreign := map[int]map[string]string{
		// another generation's hash
		0: {"version": "5", "deleted": "0", "state": "{}", "generation": "7"},
		// hashes without a version
		199: {"colour": "red"},
		401: {"colour": "blue", "size": "L"},
		// a version that is not a decimal
		449: {"version": "v1", "generation": "1"},
	}
	notHashes := map[int]string{200: "a string", 333: "another string"} // WRONGTYPE
	for i, fields := range foreign {
		key := s.prefix + "ns:" + id(i)
		if err := c.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, key, fields).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range notHashes {
		if err := c.Set(ctx, s.prefix+"ns:"+id(i), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	batch := make([]sink.Record, n)
	want := make([]sink.Outcome, n)
	held := make([]sink.Record, n) // what each key should hold after
	for i := range batch {
		old := sinktest.Product(id(i), 100, "1.00")
		switch {
		case i%3 == 0: // a new key
			batch[i], want[i], held[i] = sinktest.Product(id(i), 1, "2.00"), sink.Applied, sinktest.Product(id(i), 1, "2.00")
		case i%6 == 1: // the version held, another value: applied, unchanged
			batch[i], want[i], held[i] = sinktest.Product(id(i), 100, "3.00"), sink.Applied, old
		case i%6 == 4: // an older version
			batch[i], want[i], held[i] = sinktest.Product(id(i), 99, "4.00"), sink.Stale, old
		case i%4 == 1: // a newer delete
			batch[i], want[i], held[i] = sinktest.Deleted(id(i), 101), sink.Applied, sinktest.Deleted(id(i), 101)
		default: // a newer value
			batch[i], want[i], held[i] = sinktest.Product(id(i), 1<<62, "5.00"), sink.Applied, sinktest.Product(id(i), 1<<62, "5.00")
		}
	}
	res, err := s.Write(ctx, batch)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(res) != n {
		t.Fatalf("%d results for %d records", len(res), n)
	}
	for i, r := range res {
		key := s.prefix + batch[i].Key
		if _, isForeign := foreign[i]; isForeign || notHashes[i] != "" {
			if r.Outcome != sink.Failed || !sink.IsPermanent(r.Err) || !errors.Is(r.Err, ErrForeignValue) {
				t.Fatalf("record %d (%s): %v %v, want a permanent ErrForeignValue", i, key, r.Outcome, r.Err)
			}
			continue
		}
		if r.Outcome != want[i] || r.Err != nil {
			t.Fatalf("record %d: %v (%v), want %v", i, r.Outcome, r.Err, want[i])
		}
		h, found := heldAt(t, c, key)
		if !found || h.Version != held[i].Version || h.Deleted != held[i].Deleted || (!h.Deleted && !sinktest.SameJSON(h.Doc, held[i].Doc)) {
			t.Fatalf("%s holds %+v (found %v), want version %d deleted %v %s", key, h, found, held[i].Version, held[i].Deleted, held[i].Doc)
		}
	}
	for i, fields := range foreign {
		if got, err := c.HGetAll(ctx, s.prefix+"ns:"+id(i)).Result(); err != nil || !maps.Equal(got, fields) {
			t.Fatalf("the foreign hash ns:%d holds %v (%v), want %v unchanged", i, got, err, fields)
		}
	}
	for i, v := range notHashes {
		if got, err := c.Get(ctx, s.prefix+"ns:"+id(i)).Result(); err != nil || got != v {
			t.Fatalf("the string ns:%d holds %q (%v), want %q unchanged", i, got, err, v)
		}
	}
}

// flushMidPipeline is a go-redis hook that splits the first pipeline of
// script calls after its first call and flushes Redis's scripts there, as
// a restart between two calls would; it notes the size of every pipeline
// of script calls.
type flushMidPipeline struct {
	flush func(context.Context) error

	mu        sync.Mutex
	flushed   bool
	pipelines []int
}

func (h *flushMidPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *flushMidPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *flushMidPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "evalsha" {
			return next(ctx, cmds)
		}
		h.mu.Lock()
		h.pipelines = append(h.pipelines, len(cmds))
		split := !h.flushed && len(cmds) > 1
		h.flushed = h.flushed || split
		h.mu.Unlock()
		if !split {
			return next(ctx, cmds)
		}
		firstErr := next(ctx, cmds[:1])
		if err := h.flush(ctx); err != nil {
			return err
		}
		return errors.Join(firstErr, next(ctx, cmds[1:]))
	}
}

// Redis loses the script between two calls of one batch (written to two
// generations, 900 keys in five calls): the calls made before keep their
// answers, the script is loaded again and only the calls that found it
// missing are made again, and every record gets its outcome.
func TestNoScriptMidBatch(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	const n = 450
	id := strconv.Itoa
	var first []sink.Record
	for i := 0; i < n; i += 2 {
		first = append(first, sinktest.Product(id(i), 10, "1.00"))
	}
	if _, err := s.Write(ctx, first); err != nil {
		t.Fatalf("first Write: %v", err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	hook := &flushMidPipeline{flush: func(ctx context.Context) error { return c.ScriptFlush(ctx).Err() }}
	s.client.AddHook(hook)

	batch := make([]sink.Record, n)
	want := make([]sink.Outcome, n)
	for i := range batch {
		switch {
		case i%2 == 1: // new in both generations
			batch[i], want[i] = sinktest.Product(id(i), 5, "2.00"), sink.Applied
		case i%4 == 0: // newer in generation 1, new in 2
			batch[i], want[i] = sinktest.Product(id(i), 11, "2.00"), sink.Applied
		default: // stale in generation 1 (the live one, which speaks), new in 2
			batch[i], want[i] = sinktest.Product(id(i), 9, "2.00"), sink.Stale
		}
	}
	res, err := s.Write(ctx, batch)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	calls := (2*n + chunkKeys - 1) / chunkKeys
	if !hook.flushed || !slices.Equal(hook.pipelines, []int{calls, calls - 1}) {
		t.Fatalf("pipelines of script calls: %v (flushed %v), want %d calls then the %d that found no script", hook.pipelines, hook.flushed, calls, calls-1)
	}
	for i, r := range res {
		if r.Outcome != want[i] || r.Err != nil {
			t.Fatalf("record %d: %v (%v), want %v", i, r.Outcome, r.Err, want[i])
		}
		wantLive := batch[i].Version
		if want[i] == sink.Stale {
			wantLive = 10
		}
		if h, found := heldAt(t, c, s.prefix+batch[i].Key); !found || h.Version != wantLive {
			t.Fatalf("generation 1's %s holds %+v, want version %d", batch[i].Key, h, wantLive)
		}
		if h, found := heldAt(t, c, s.genPrefix(2)+batch[i].Key); !found || h.Version != batch[i].Version {
			t.Fatalf("generation 2's %s holds %+v, want version %d", batch[i].Key, h, batch[i].Version)
		}
	}
	if ok, _ := c.ScriptExists(ctx, s.scripts.write.Hash()).Result(); len(ok) != 1 || !ok[0] {
		t.Fatal("the write script was not loaded again")
	}
}

func TestGenerations(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	gens := func(wantLive, wantBuilding int) {
		t.Helper()
		live, building, err := s.Generations(ctx)
		if err != nil || live != wantLive || building != wantBuilding {
			t.Fatalf("Generations: %d %d %v, want %d %d", live, building, err, wantLive, wantBuilding)
		}
	}
	write := func(w sink.Sink, recs ...sink.Record) []sink.Result {
		t.Helper()
		res, err := w.Write(ctx, recs)
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
		return res
	}
	version := func(key string) int64 {
		t.Helper()
		h, found := heldAt(t, c, key)
		if !found {
			return 0
		}
		return h.Version
	}
	g2 := s.prefix + "g2:"

	gens(1, 0)
	if p := livePrefix(t, c, s.prefix); p != s.prefix {
		t.Fatalf("live_prefix %q, want %q", p, s.prefix)
	}
	write(s, sinktest.Product("1", 10, "1.00"))
	if version(s.prefix+"ns:1") != 10 || version(g2+"ns:1") != 0 {
		t.Fatal("a write before Begin did not go to generation 1 only")
	}

	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2): %v", err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2) again: %v", err)
	}
	gens(1, 2)
	if err := s.Begin(ctx, 3); !errors.Is(err, ErrBuilding) {
		t.Fatalf("Begin(3) while 2 is built: %v, want ErrBuilding", err)
	}
	if err := s.Begin(ctx, 1); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Begin(1), the live one: %v, want ErrLiveGeneration", err)
	}
	if err := s.Begin(ctx, 0); !errors.Is(err, ErrBadGeneration) {
		t.Fatalf("Begin(0): %v, want ErrBadGeneration", err)
	}

	// Writers write both; the builder (At) writes generation 2 only.
	write(s, sinktest.Product("2", 20, "2.00"))
	if version(s.prefix+"ns:2") != 20 || version(g2+"ns:2") != 20 {
		t.Fatal("a write while building did not go to both generations")
	}
	at2 := s.At(2)
	res := write(at2, sinktest.Product("1", 10, "1.00"), sinktest.Product("2", 19, "1.90"))
	if res[0].Outcome != sink.Applied || res[1].Outcome != sink.Stale {
		t.Fatalf("At(2) outcomes %v", res)
	}
	if version(g2+"ns:1") != 10 || version(s.prefix+"ns:1") != 10 {
		t.Fatal("At(2) did not write generation 2")
	}
	// The live generation's outcome speaks for a record written to both.
	write(at2, sinktest.Product("3", 30, "3.00"))
	res = write(s, sinktest.Product("3", 25, "2.50"))
	if res[0].Outcome != sink.Applied || version(s.prefix+"ns:3") != 25 || version(g2+"ns:3") != 30 {
		t.Fatalf("a record stale in the building generation only: %v", res)
	}
	if h, found, err := at2.(sink.Reader).Held(ctx, "ns:3"); err != nil || !found || h.Version != 30 {
		t.Fatalf("At(2).Held: %+v %v %v", h, found, err)
	}
	if err := at2.Close(); err != nil {
		t.Fatalf("At(2).Close: %v", err)
	}

	if err := s.Switch(ctx, 2); err != nil {
		t.Fatalf("Switch(2): %v", err)
	}
	gens(2, 0)
	if p := livePrefix(t, c, s.prefix); p != g2 {
		t.Fatalf("live_prefix %q, want %q", p, g2)
	}
	if h, found, err := s.Held(ctx, "ns:3"); err != nil || !found || h.Version != 30 {
		t.Fatalf("Held after the switch: %+v %v %v, want generation 2's version 30", h, found, err)
	}
	// Closing At(2) closed nothing: s still writes, now to generation 2 only.
	write(s, sinktest.Product("4", 40, "4.00"))
	if version(g2+"ns:4") != 40 || version(s.prefix+"ns:4") != 0 {
		t.Fatal("a write after the switch did not go to generation 2 only")
	}

	if err := s.Drop(ctx, 2); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Drop(2), the live one: %v, want ErrLiveGeneration", err)
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	keys, err := c.Keys(ctx, escapeGlob(s.prefix)+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k != s.pointer && !strings.HasPrefix(k, g2) {
			t.Fatalf("%s is left after dropping generation 1", k)
		}
	}
	if len(keys) != 5 { // the pointer and ns:1..ns:4 of generation 2
		t.Fatalf("after dropping generation 1: %v", keys)
	}
	gens(2, 0)

	// Dropping the generation being built clears the mark.
	if err := s.Begin(ctx, 3); err != nil {
		t.Fatalf("Begin(3): %v", err)
	}
	write(s, sinktest.Product("5", 50, "5.00"))
	if err := s.Drop(ctx, 3); err != nil {
		t.Fatalf("Drop(3): %v", err)
	}
	gens(2, 0)
	if version(s.prefix+"g3:ns:5") != 0 || version(g2+"ns:5") != 50 {
		t.Fatal("Drop(3) left generation 3 or took generation 2")
	}
}

// A reader that reads live_prefix, then the hash, finds every key while
// generations are switched back and forth, and never sees a live_prefix that
// is not its live generation's.
func TestSwitchIsAtomicForReaders(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	const keys = 50
	var recs []sink.Record
	for i := range keys {
		recs = append(recs, sinktest.Product(strconv.Itoa(i), 1, "1.00"))
	}
	if _, err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.At(2).Write(ctx, recs); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var seen [3]atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 2 {
		wg.Go(func() {
			rc := redis.NewClient(&redis.Options{Addr: addr})
			defer rc.Close()
			for i := r; !stop.Load(); i++ {
				ptr, err := rc.HMGet(ctx, s.pointer, "live", "live_prefix").Result()
				if err != nil {
					errs <- err
					return
				}
				live, _ := strconv.Atoi(fmt.Sprint(ptr[0]))
				if live < 1 || live > 2 || ptr[1] != s.genPrefix(live) {
					errs <- fmt.Errorf("the pointer says live %v with live_prefix %v", ptr[0], ptr[1])
					return
				}
				n, err := rc.Exists(ctx, ptr[1].(string)+recs[i%keys].Key).Result()
				if err != nil || n != 1 {
					errs <- fmt.Errorf("%s%s is missing (%v)", ptr[1], recs[i%keys].Key, err)
					return
				}
				seen[live].Add(1)
			}
		})
	}
	for i := range 40 {
		if err := s.Switch(ctx, 2-i%2); err != nil {
			t.Fatalf("Switch: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if seen[1].Load() == 0 || seen[2].Load() == 0 {
		t.Fatalf("the readers saw generation 1 %d times and 2 %d times: the switches went unseen", seen[1].Load(), seen[2].Load())
	}
}

// Drop matches its generation's prefix literally: glob characters in the key
// prefix match only themselves.
func TestDropEscapesGlobCharacters(t *testing.T) {
	addr, c := backend(t)
	ctx := ctxFor(t)
	base := uniquePrefix(t, c, "")
	prefix := base + `a*[bc]?\x/`
	s := open(t, addr, prefix)
	// Keys the unescaped pattern would match, of no generation of s's.
	neighbours := []string{base + `aZ[bc]?\x/g2:ns:1`, base + `a*b?\x/g2:ns:1`, base + `a*[bc]Q\x/g2:ns:1`,
		base + `a*[bc]?x/g2:ns:1`, base + `a*[bc]?\x/g20:ns:1`, base + `aZ[bc]?\x/ns:1`, base + `a*c?\x/ns:1`}
	for _, k := range neighbours {
		if err := c.HSet(ctx, k, "version", "1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	recs := []sink.Record{sinktest.Product("1", 1, "1.00"), sinktest.Product("2", 1, "1.00"), sinktest.Product("g2x", 1, "1.00")}
	if _, err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.At(2).Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	exists := func(key string) bool {
		n, err := c.Exists(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	remaining := func() []string {
		var out []string
		for _, k := range append([]string{s.pointer}, neighbours...) {
			if exists(k) {
				out = append(out, k)
			}
		}
		return out
	}

	if err := s.Drop(ctx, 2); err != nil {
		t.Fatalf("Drop(2): %v", err)
	}
	for _, r := range recs {
		if exists(s.genPrefix(2) + r.Key) {
			t.Fatalf("%s is left after Drop(2)", s.genPrefix(2)+r.Key)
		}
		if !exists(prefix + r.Key) {
			t.Fatalf("Drop(2) took generation 1's %s", prefix+r.Key)
		}
	}
	if got := remaining(); len(got) != len(neighbours)+1 {
		t.Fatalf("Drop(2) took keys not its own; left: %v", got)
	}

	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.At(2).Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	for _, r := range recs {
		if exists(prefix + r.Key) {
			t.Fatalf("%s is left after Drop(1)", prefix+r.Key)
		}
		if !exists(s.genPrefix(2) + r.Key) {
			t.Fatalf("Drop(1) took generation 2's %s", s.genPrefix(2)+r.Key)
		}
	}
	if got := remaining(); len(got) != len(neighbours)+1 {
		t.Fatalf("Drop(1) took keys not its own; left: %v", got)
	}
}

func TestEscapeGlob(t *testing.T) {
	for in, want := range map[string]string{
		"product:":    "product:",
		`a*b?c[d]e\f`: `a\*b\?c\[d\]e\\f`,
		"ü*":          `ü\*`,
		"\xff[":       "\xff\\[",
	} {
		if got := escapeGlob(in); got != want {
			t.Errorf("escapeGlob(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShapedLikeGeneration1(t *testing.T) {
	s := &shared{prefix: "p:", pointer: "p:@generations"}
	for key, want := range map[string]bool{
		"p:ns:1":         true,
		"p:g2:ns:1":      false,
		"p:g13:ns:1":     false,
		"p:g1:ns:1":      true, // generation 1 has no g1: prefix
		"p:g02:ns:1":     true,
		"p:gx:1":         true,
		"p:shop:1":       true,
		"p:@generations": false,
		"q:ns:1":         false,
	} {
		if got := s.shapedLikeGeneration1(key); got != want {
			t.Errorf("shapedLikeGeneration1(%q) = %v, want %v", key, got, want)
		}
	}
}

// inNamespace is rec moved to namespace ns.
func inNamespace(ns string, rec sink.Record) sink.Record {
	rec.Namespace, rec.Key = ns, ns+":"+rec.ID
	return rec
}

// exists reports whether key exists.
func exists(t *testing.T, c *redis.Client, key string) bool {
	t.Helper()
	n, err := c.Exists(ctxFor(t), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}

// Drop(2) deletes generation 2's hashes only: generation 1's namespace "g2",
// spelt under generation 2's prefix, survives; dropping again is no error.
func TestDropSparesGeneration1NamespaceG2(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	g2 := s.prefix + "g2:"
	// Generation 1 (live): namespace g2, ids 7 and 8, so keys P+"g2:7" and
	// P+"g2:8", and namespace ns.
	live := []sink.Record{inNamespace("g2", sinktest.Product("7", 70, "7.00")), inNamespace("g2", sinktest.Product("8", 80, "8.00")),
		sinktest.Product("7", 71, "7.10")}
	if _, err := s.Write(ctx, live); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2): %v", err)
	}
	// Generation 2 holds key ns:7 (P+"g2:ns:7"), and namespace g2's records
	// written to both generations (P+"g2:g2:7").
	res, err := s.At(2).Write(ctx, []sink.Record{sinktest.Product("7", 72, "7.20"), sinktest.Product("1", 1, "1.00")})
	if err != nil || res[0].Outcome != sink.Applied || res[1].Outcome != sink.Applied {
		t.Fatalf("At(2).Write: %v %v", res, err)
	}
	live[0] = inNamespace("g2", sinktest.Product("7", 73, "7.30"))
	if res, err := s.Write(ctx, live[:1]); err != nil || res[0].Outcome != sink.Applied {
		t.Fatalf("Write while building: %v %v", res, err)
	}
	own := []string{g2 + "ns:7", g2 + "ns:1", g2 + "g2:7"}
	for _, k := range own {
		if gen, err := c.HGet(ctx, k, "generation").Result(); err != nil || gen != "2" {
			t.Errorf("%s: generation %q (%v), want 2", k, gen, err)
		}
	}
	if gen, err := c.HGet(ctx, g2+"7", "generation").Result(); err != nil || gen != "1" {
		t.Errorf("%s7: generation %q (%v), want 1", g2, gen, err)
	}

	if err := s.Drop(ctx, 2); err != nil {
		t.Fatalf("Drop(2): %v", err)
	}
	for _, k := range own {
		if exists(t, c, k) {
			t.Fatalf("%s is left after Drop(2)", k)
		}
	}
	for _, r := range live {
		h, found, err := s.Held(ctx, r.Key)
		if err != nil || !found || h.Version != r.Version {
			t.Fatalf("generation 1's %s after Drop(2): %+v found %v %v, want version %d", r.Key, h, found, err, r.Version)
		}
	}
	if live, building, err := s.Generations(ctx); err != nil || live != 1 || building != 0 {
		t.Fatalf("Generations after Drop(2): %d %d %v, want 1 0", live, building, err)
	}

	// Several runners drop the same replaced generation: all succeed.
	if err := s.Drop(ctx, 2); err != nil {
		t.Fatalf("Drop(2) again: %v", err)
	}
	if err := s.Drop(ctx, 9); err != nil {
		t.Fatalf("Drop(9), never begun: %v", err)
	}
	for _, r := range live {
		if _, found, err := s.Held(ctx, r.Key); err != nil || !found {
			t.Fatalf("generation 1's %s after dropping again: found %v %v", r.Key, found, err)
		}
	}
}

// A record key of generation 2 that spells a hash of generation 1 exactly
// (namespace g2 with id "ns:7", and ns:7) is refused, never mixed in, and
// Drop(2) leaves the hash to generation 1.
func TestKeySpeltByTwoGenerations(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	first := inNamespace("g2", sinktest.Product("7", 1, "1.00"))
	first.ID, first.Key = "ns:7", "g2:ns:7"
	if _, err := s.Write(ctx, []sink.Record{first}); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	res, err := s.At(2).Write(ctx, []sink.Record{sinktest.Product("7", 5, "5.00"), sinktest.Product("8", 5, "5.00")})
	if err != nil {
		t.Fatalf("At(2).Write: %v", err)
	}
	if res[0].Outcome != sink.Failed || !sink.IsPermanent(res[0].Err) || !errors.Is(res[0].Err, ErrForeignValue) {
		t.Fatalf("the spelt-alike record: %v %v, want a permanent ErrForeignValue", res[0].Outcome, res[0].Err)
	}
	if res[1].Outcome != sink.Applied {
		t.Fatalf("the other record: %v %v", res[1].Outcome, res[1].Err)
	}
	if err := s.Drop(ctx, 2); err != nil {
		t.Fatalf("Drop(2): %v", err)
	}
	if h, found, err := s.Held(ctx, first.Key); err != nil || !found || h.Version != 1 || !sinktest.SameJSON(h.Doc, first.Doc) {
		t.Fatalf("generation 1's %s: %+v %v %v, want version 1 unchanged", first.Key, h, found, err)
	}
	if exists(t, c, s.prefix+"g2:ns:8") {
		t.Fatal("Drop(2) left generation 2's ns:8")
	}
}

// Hashes written before they carried a generation field: Drop(1) takes
// those spelt like generation 1's only, no other Drop takes any, and the
// next write to one stamps it.
func TestDropUnmarkedHashes(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	unmarked := func(key string) {
		t.Helper()
		if err := c.HSet(ctx, key, "version", "1", "deleted", "0", "state", "{}", "updated_at", "2025-01-01T00:00:00.000Z").Err(); err != nil {
			t.Fatal(err)
		}
	}
	gen1, gen2, gen3 := s.prefix+"ns:1", s.prefix+"g2:ns:1", s.prefix+"g3:ns:1"
	for _, k := range []string{gen1, gen2, gen3} {
		unmarked(k)
	}
	if err := c.HSet(ctx, s.prefix+"other", "colour", "red").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, 2); err != nil {
		t.Fatalf("Drop(2): %v", err)
	}
	if !exists(t, c, gen2) {
		t.Fatalf("Drop(2) took %s, which has no generation field", gen2)
	}
	if err := s.Begin(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	if exists(t, c, gen1) {
		t.Fatalf("Drop(1) left %s", gen1)
	}
	for _, k := range []string{gen2, gen3, s.pointer, s.prefix + "other"} {
		if !exists(t, c, k) {
			t.Fatalf("Drop(1) took %s", k)
		}
	}
	if res, err := s.Write(ctx, []sink.Record{sinktest.Product("1", 2, "2.00")}); err != nil || res[0].Outcome != sink.Applied {
		t.Fatalf("Write over an unmarked hash: %v %v", res, err)
	}
	if gen, err := c.HGet(ctx, gen3, "generation").Result(); err != nil || gen != "3" {
		t.Fatalf("%s: generation %q (%v), want 3", gen3, gen, err)
	}
}

// redisError stands for an error reply from the server.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// Which errors fail a record for good, which the batch, and which reload
// the script.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want verdict
	}{
		{"none", nil, answered},
		{"noscript", redis.ErrNoScript, noScript},
		{"wrongtype", redisError("WRONGTYPE Operation against a key holding the wrong kind of value script: abc, on @user_script:1."), refused},
		{"wrongtype before redis 7", redisError("ERR Error running script (call to f_abc): @user_script:1: WRONGTYPE Operation against a key holding the wrong kind of value"), refused},
		{"foreign hash", redisError("FOREIGN the hash holds no version"), refused},
		{"loading", redisError("LOADING Redis is loading the dataset in memory"), transient},
		{"busy", redisError("BUSY Redis is busy running a script."), transient},
		{"tryagain", redisError("TRYAGAIN Multiple keys request during rehashing of slot"), transient},
		{"clusterdown", redisError("CLUSTERDOWN The cluster is down"), transient},
		{"masterdown", redisError("MASTERDOWN Link with MASTER is down"), transient},
		{"readonly", redisError("READONLY You can't write against a read only replica."), transient},
		{"oom", redisError("OOM command not allowed when used memory > 'maxmemory'."), transient},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, transient},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, transient},
		{"deadline", context.DeadlineExceeded, transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Fatalf("classify(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// A BUSY server (a long script runs) fails the batch with a transient error,
// and the next try succeeds once it is over.
func TestBusyFailsTheBatch(t *testing.T) {
	addr, c := backend(t)
	s := open(t, addr, uniquePrefix(t, c, ""))
	ctx := ctxFor(t)
	old, err := c.ConfigGet(ctx, "busy-reply-threshold").Result()
	if err != nil || old["busy-reply-threshold"] == "" {
		t.Fatalf("CONFIG GET busy-reply-threshold: %v %v", old, err)
	}
	if err := c.ConfigSet(ctx, "busy-reply-threshold", "50").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.ConfigSet(context.Background(), "busy-reply-threshold", old["busy-reply-threshold"]).Err()
	})

	// A read-only script that spins for at most 3 seconds, or until killed.
	busy := make(chan error, 1)
	go func() {
		bc := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 10 * time.Second, MaxRetries: -1})
		defer bc.Close()
		busy <- bc.Eval(context.Background(), `local t = redis.call('TIME')
local stop = tonumber(t[1]) + 3
while tonumber(redis.call('TIME')[1]) < stop do end
return 1`, nil).Err()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !redis.HasErrorPrefix(c.Ping(ctx).Err(), "BUSY") {
		if time.Now().After(deadline) {
			t.Fatal("the server never answered BUSY")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// At(1) skips the pointer read: the script calls themselves meet BUSY.
	_, err = s.At(1).Write(ctx, []sink.Record{sinktest.Product("1", 1, "1.00")})
	if err == nil || sink.IsPermanent(err) || !strings.Contains(err.Error(), "BUSY") {
		t.Fatalf("Write to a busy server: %v, want a transient BUSY error", err)
	}
	if err := c.ScriptKill(ctx).Err(); err != nil {
		t.Logf("SCRIPT KILL: %v", err)
	}
	if err := <-busy; err == nil {
		t.Log("the busy script ended before SCRIPT KILL")
	}
	res, err := s.Write(ctx, []sink.Record{sinktest.Product("1", 1, "1.00")})
	if err != nil || res[0].Outcome != sink.Applied {
		t.Fatalf("Write after the script ended: %v %v", res, err)
	}
}

// A Write whose context is canceled (no deadline) returns at once, although
// go-redis would wait for its read timeout.
func TestCancelReturnsPromptly(t *testing.T) {
	addr, c := backend(t)
	p := sinktest.NewProxy(t, addr, false)
	s := open(t, p.Addr(), uniquePrefix(t, c, ""))
	p.Stall()
	defer p.Up()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := s.Write(ctx, []sink.Record{sinktest.Product("1", 1, "1.00")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Write returned %v after the cancel", el)
	}
}

// New against a port with nothing listening fails at once, naming the
// address.
func TestNewUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := New(ctx, config.SinkRedis{Addr: addr}, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("New against nothing returned no error")
	}
	if !strings.Contains(err.Error(), "cannot reach "+addr) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("New: %v, want cannot reach %s ... connection refused", err, addr)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("New took %v to give up", el)
	}
}

// A wrong password fails New with "authentication failed", never the
// password.
func TestNewWrongPassword(t *testing.T) {
	addr, c := backend(t)
	ctx := ctxFor(t)
	user := fmt.Sprintf("t-%d", time.Now().UnixNano())
	if err := c.Do(ctx, "ACL", "SETUSER", user, "on", ">right-password", "~*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { _ = c.Do(context.Background(), "ACL", "DELUSER", user).Err() })

	const secret = "wrong-password-s3cret"
	_, err := New(ctx, config.SinkRedis{Addr: addr, Username: user, Password: secret}, nil)
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("New with a wrong password: %v, want authentication failed", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("the error shows the password: %v", err)
	}
	s, err := New(ctx, config.SinkRedis{Addr: addr, Username: user, Password: "right-password", KeyPrefix: uniquePrefix(t, c, "")}, nil)
	if err != nil {
		t.Fatalf("New with the right password: %v", err)
	}
	_ = s.Close()
}

// The default key prefix is product:, and a second New finds the pointer
// made by the first.
func TestNewKeepsThePointer(t *testing.T) {
	addr, c := backend(t)
	ctx := ctxFor(t)
	prefix := uniquePrefix(t, c, "")
	s := open(t, addr, prefix)
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatal(err)
	}
	again := open(t, addr, prefix)
	if live, building, err := again.Generations(ctx); err != nil || live != 2 || building != 0 {
		t.Fatalf("a second New sees %d %d %v, want live 2", live, building, err)
	}
	if err := c.Del(ctx, s.pointer).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(ctx, []sink.Record{sinktest.Product("1", 1, "1.00")}); !errors.Is(err, ErrNoPointer) {
		t.Fatalf("Write without a pointer: %v, want ErrNoPointer", err)
	}
	if _, _, err := s.Held(ctx, "ns:1"); !errors.Is(err, ErrNoPointer) {
		t.Fatalf("Held without a pointer: %v, want ErrNoPointer", err)
	}
	// In a database of its own, not to leave a pointer where others look.
	const db = 15
	dc := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	defer dc.Close()
	existed, err := dc.Exists(ctx, "product:@generations").Result()
	if err != nil {
		t.Fatal(err)
	}
	def, err := New(ctx, config.SinkRedis{Addr: addr, DB: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if p, err := dc.HGet(ctx, "product:@generations", "live_prefix").Result(); err != nil || p != "product:" {
		t.Fatalf("the default prefix's pointer says %q (%v), want product:", p, err)
	}
	if existed == 0 {
		_ = dc.Del(ctx, "product:@generations").Err()
	}
}
