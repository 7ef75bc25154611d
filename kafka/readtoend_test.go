package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/kafka"
)

// The tests run in a synctest bubble on kfake's virtual network, so idle
// periods, time bounds and retries pass on virtual time.

// broker is an in-process broker on the virtual network of a bubble.
type broker struct {
	t       *testing.T
	cluster *kfake.Cluster
	client  []kgo.Opt // the options to connect to it
}

// inBubble runs fn in a synctest bubble with a one-node broker whose topics
// t (3 partitions) and u (1 partition) exist.
func inBubble(t *testing.T, fn func(t *testing.T, b *broker)) {
	synctest.Test(t, func(t *testing.T) {
		var vnet kfake.VirtualNetwork
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(9092), kfake.ListenFn(vnet.Listen),
			kfake.SeedTopics(3, "t"), kfake.SeedTopics(1, "u"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fn(t, &broker{t: t, cluster: c, client: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.Dialer(vnet.DialContext)}})
	})
}

// newClient is a client of the broker with opts.
func (b *broker) newClient(opts ...kgo.Opt) *kgo.Client {
	b.t.Helper()
	cl, err := kgo.NewClient(append(slices.Clip(b.client), opts...)...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(cl.Close)
	return cl
}

// produce writes one record per key to topic's partition, each in a batch
// of its own.
func (b *broker) produce(topic string, partition int32, keys ...string) {
	b.t.Helper()
	cl := b.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	for _, k := range keys {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Partition: partition, Key: []byte(k), Value: []byte(k)}).FirstErr(); err != nil {
			b.t.Fatalf("produce %s: %v", k, err)
		}
	}
}

// transaction writes keys to topic's partition in one transaction that it
// commits or aborts.
func (b *broker) transaction(cl *kgo.Client, topic string, partition int32, commit bool, keys ...string) {
	b.t.Helper()
	ctx := context.Background()
	if err := cl.BeginTransaction(); err != nil {
		b.t.Fatal(err)
	}
	for _, k := range keys {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: partition, Key: []byte(k), Value: []byte(k)}).FirstErr(); err != nil {
			b.t.Fatalf("produce %s: %v", k, err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		b.t.Fatalf("end transaction: %v", err)
	}
}

// bounded is a context that ends after an hour (of virtual time), so that
// a read that never ends fails its test instead of hanging it.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	t.Cleanup(cancel)
	return ctx
}

// read reads topics to their end, collecting the keys by partition ("t/0").
func read(t *testing.T, client []kgo.Opt, topics []string, opts ...kafka.ReadOption) (map[string][]string, kafka.ReadResult, error) {
	got := map[string][]string{}
	res, err := kafka.ReadToEnd(bounded(t), client, topics, func(r *kgo.Record) error {
		at := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
		got[at] = append(got[at], string(r.Key))
		return nil
	}, opts...)
	return got, res, err
}

// noSessions are the options to connect without fetch sessions, so that
// every fetch names every partition (the tests answer fetches themselves).
func noSessions(b *broker) []kgo.Opt {
	return append(slices.Clip(b.client), kgo.DisableFetchSessions())
}

// strict makes a read that is not done by the end offsets fail instead of
// ending for idleness.
var strict = []kafka.ReadOption{kafka.WithIdleEnd(0), kafka.WithTimeout(time.Minute)}

// Several partitions of several topics are read to their ends, each in
// order, and a record written after the read began is not passed on.
func TestReadToEndSeveralPartitions(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("t", 0, "a0", "a1", "a2", "a3", "a4")
		b.produce("t", 2, "c0", "c1", "c2")
		b.produce("u", 0, "u0", "u1")
		late := b.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
		wroteLate := false
		got := map[string][]string{}
		res, err := kafka.ReadToEnd(bounded(t), b.client, []string{"t", "u"}, func(r *kgo.Record) error {
			if !wroteLate {
				wroteLate = true
				for _, p := range []int32{0, 1, 2} {
					if err := late.ProduceSync(context.Background(), &kgo.Record{Topic: "t", Partition: p, Key: []byte("late")}).FirstErr(); err != nil {
						t.Fatal(err)
					}
				}
			}
			at := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
			got[at] = append(got[at], string(r.Key))
			return nil
		}, strict...)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"t/0": {"a0", "a1", "a2", "a3", "a4"}, "t/2": {"c0", "c1", "c2"}, "u/0": {"u0", "u1"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("read %v, want %v", got, want)
		}
		if res.Records != 10 || len(res.Idle) != 0 || len(res.Missing) != 0 {
			t.Errorf("result %+v, want 10 records, none idle or missing", res)
		}
	})
}

// WithPartitions reads only the partitions asked for (one a topic does not
// have is skipped), and WithStartOffsets starts where it says: past the log
// start, or at or past the end (nothing to read).
func TestReadToEndPartitionsAndStarts(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("t", 0, "a0", "a1", "a2", "a3", "a4")
		b.produce("t", 1, "b0")
		b.produce("t", 2, "c0", "c1")
		b.produce("u", 0, "u0", "u1")
		got, res, err := read(t, b.client, []string{"t", "u"}, append(strict, kafka.WithPartitions(0, 2, 7),
			kafka.WithStartOffsets(map[string]map[int32]int64{"t": {0: 3, 2: 2}, "u": {0: -5}}))...)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"t/0": {"a3", "a4"}, "u/0": {"u0", "u1"}}
		if fmt.Sprint(got) != fmt.Sprint(want) || res.Records != 4 {
			t.Errorf("read %v (%d records), want %v", got, res.Records, want)
		}
	})
}

// A partition whose record before the end offset was compacted away ends
// at the first record past its end, which is not passed on.
func TestReadToEndPastACompactedEnd(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		if err := b.cluster.CreateTopic("c", 1, map[string]string{"cleanup.policy": "compact"}); err != nil {
			t.Fatal(err)
		}
		b.produce("c", 0, "x", "y", "y", "z") // y@1 is superseded by y@2
		b.cluster.Compact()
		// The read lists its end as 2, as if y@2 were written after it
		// began: y@1, the last record before the end, is gone.
		b.cluster.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
			l := req.(*kmsg.ListOffsetsRequest)
			if l.IsolationLevel != 1 || len(l.Topics) == 0 || len(l.Topics[0].Partitions) == 0 || l.Topics[0].Partitions[0].Timestamp != -1 {
				return nil, nil, false
			}
			b.cluster.KeepControl()
			resp := l.ResponseKind().(*kmsg.ListOffsetsResponse)
			for _, rt := range l.Topics {
				st := kmsg.NewListOffsetsResponseTopic()
				st.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					sp := kmsg.NewListOffsetsResponseTopicPartition()
					sp.Partition, sp.Offset = rp.Partition, 2
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			return resp, nil, true
		})
		var offsets []int64
		res, err := kafka.ReadToEnd(bounded(t), b.client, []string{"c"}, func(r *kgo.Record) error {
			offsets = append(offsets, r.Offset)
			return nil
		}, strict...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(offsets, []int64{0}) || len(res.Idle) != 0 {
			t.Errorf("read offsets %v, idle %v; want [0], none idle", offsets, res.Idle)
		}
	})
}

// Aborted records are never passed on, and a partition whose last offsets
// are transaction markers (never delivered as records) is seen to end.
func TestReadToEndTransactions(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		tx := b.newClient(kgo.TransactionalID("tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		b.transaction(tx, "t", 0, true, "a", "b")
		b.transaction(tx, "t", 0, false, "x", "y")
		b.transaction(tx, "t", 0, true, "c")
		b.transaction(tx, "t", 0, false, "z") // t/0 ends with an abort marker
		b.transaction(tx, "t", 1, false, "w") // t/1 holds only an aborted transaction
		b.produce("t", 2, "plain")
		b.transaction(tx, "t", 2, true, "d") // t/2 ends with a commit marker
		got, res, err := read(t, b.client, []string{"t"}, strict...)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"t/0": {"a", "b", "c"}, "t/2": {"plain", "d"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("read %v, want %v", got, want)
		}
		if res.Records != 5 {
			t.Errorf("counted %d records, want 5", res.Records)
		}
	})
}

// A transaction still open holds the end back: the read stops at the last
// stable offset; with WithSettledTransactions it waits for the transaction
// to end, and fails with ErrTransactionOpen past its bound.
func TestReadToEndOpenTransaction(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("u", 0, "before")
		tx := b.newClient(kgo.TransactionalID("tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(10*time.Minute))
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tx.ProduceSync(context.Background(), &kgo.Record{Topic: "u", Key: []byte("open")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		got, _, err := read(t, b.client, []string{"u"}, strict...)
		if err != nil || fmt.Sprint(got["u/0"]) != "[before]" {
			t.Errorf("without waiting: read %v, %v; want [before]", got, err)
		}

		start := time.Now()
		_, _, err = read(t, b.client, []string{"u"}, append(strict, kafka.WithSettledTransactions(5*time.Second))...)
		if !errors.Is(err, kafka.ErrTransactionOpen) || !strings.Contains(err.Error(), "u/0") {
			t.Errorf("open past the bound: %v, want ErrTransactionOpen naming u/0", err)
		}
		if waited := time.Since(start); waited < 5*time.Second {
			t.Errorf("gave up after %s, before the 5s bound", waited)
		}

		go func() {
			time.Sleep(2 * time.Second)
			if err := tx.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
				t.Error(err)
			}
		}()
		got, _, err = read(t, b.client, []string{"u"}, append(strict, kafka.WithSettledTransactions(time.Minute))...)
		if err != nil || fmt.Sprint(got["u/0"]) != "[before open]" {
			t.Errorf("waiting: read %v, %v; want [before open]", got, err)
		}
	})
}

// An empty topic, a topic whose records were all deleted and a missing
// topic are read at once, without waiting for anything.
func TestReadToEndEmpty(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("u", 0, "gone", "gone too")
		if err := b.cluster.DeleteRecords("u", 0, 2); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		got, res, err := read(t, b.client, []string{"t", "u", "missing"}, strict...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 || res.Records != 0 {
			t.Errorf("read %v from empty topics", got)
		}
		if !slices.Equal(res.Missing, []string{"missing"}) {
			t.Errorf("missing %v, want [missing]", res.Missing)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("took %s", took)
		}
	})
}

// hideFetches makes the broker leave partition 1 out of every fetch, as if
// the records before its end offset were gone and nothing more came.
func hideFetches(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		f := req.(*kmsg.FetchRequest)
		for i := range f.Topics {
			f.Topics[i].Partitions = slices.DeleteFunc(f.Topics[i].Partitions, func(p kmsg.FetchRequestTopicPartition) bool { return p.Partition == 1 })
		}
		return nil, nil, false
	})
}

// A partition that sends nothing before its end offset ends after the idle
// period, and is reported; the others are read in full.
func TestReadToEndIdlePartition(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("t", 0, "a0", "a1")
		b.produce("t", 1, "b0", "b1", "b2")
		hideFetches(b.cluster)
		start := time.Now()
		got, res, err := read(t, noSessions(b), []string{"t"}, kafka.WithIdleEnd(3*time.Second), kafka.WithTimeout(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if fmt.Sprint(got) != "map[t/0:[a0 a1]]" {
			t.Errorf("read %v", got)
		}
		want := []kafka.Partition{{Topic: "t", Partition: 1, Next: 0, End: 3}}
		if !slices.Equal(res.Idle, want) {
			t.Errorf("idle %v, want %v", res.Idle, want)
		}
		if took < 3*time.Second || took > 10*time.Second {
			t.Errorf("ended after %s, want the 3s idle period", took)
		}
	})
}

// The time bound ends a read that cannot reach its end with an error that
// says so and names the partition short of its end.
func TestReadToEndTimeout(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("t", 0, "a0")
		b.produce("t", 1, "b0", "b1")
		hideFetches(b.cluster)
		start := time.Now()
		_, res, err := read(t, noSessions(b), []string{"t"}, kafka.WithIdleEnd(0), kafka.WithTimeout(5*time.Second))
		if !errors.Is(err, kafka.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
		if !strings.Contains(err.Error(), "t/1 (at 0, end 2)") {
			t.Errorf("%q does not name the partition short of its end", err)
		}
		if took := time.Since(start); took != 5*time.Second {
			t.Errorf("returned after %s, want the 5s bound", took)
		}
		if res.Records != 1 {
			t.Errorf("counted %d records, want the 1 read", res.Records)
		}
	})
}

// failFetches answers the next n fetches (every fetch if n < 0) with an
// error for each partition, and counts them.
func failFetches(c *kfake.Cluster, n int, count *atomic.Int64) {
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if n >= 0 && count.Load() >= int64(n) {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		count.Add(1)
		f := req.(*kmsg.FetchRequest)
		resp := f.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range f.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.UnknownServerError.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// Fetches that return only errors are retried, and the read goes on.
func TestReadToEndRetriesFailingFetches(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("u", 0, "u0", "u1")
		var failed atomic.Int64
		failFetches(b.cluster, 5, &failed)
		got, _, err := read(t, noSessions(b), []string{"u"}, strict...)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "map[u/0:[u0 u1]]" {
			t.Errorf("read %v", got)
		}
		if failed.Load() != 5 {
			t.Errorf("%d fetches failed, want 5", failed.Load())
		}
	})
}

// Fetches that keep failing end the read after the error limit, with the
// fetch error.
func TestReadToEndFetchesKeepFailing(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("u", 0, "u0")
		var failed atomic.Int64
		failFetches(b.cluster, -1, &failed)
		start := time.Now()
		_, _, err := read(t, noSessions(b), []string{"u"}, append(strict, kafka.WithErrorLimit(4*time.Second))...)
		if !errors.Is(err, kafka.ErrFetchFailing) || !errors.Is(err, kerr.UnknownServerError) {
			t.Fatalf("got %v, want ErrFetchFailing with the fetch error", err)
		}
		if took := time.Since(start); took < 4*time.Second || took > 5*time.Second {
			t.Errorf("gave up after %s, want the 4s limit", took)
		}
		if failed.Load() < 2 {
			t.Errorf("%d fetches, want retries", failed.Load())
		}
	})
}

// Progress is reported as the read goes, at most once per period, with
// the records read so far.
func TestReadToEndProgress(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		keys := make([]string, 20)
		for i := range keys {
			keys[i] = fmt.Sprint("k", i)
		}
		b.produce("u", 0, keys...)
		var reports []int64
		var at []time.Duration
		start := time.Now()
		// One batch per fetch, and a second per record: the read takes 20s.
		res, err := kafka.ReadToEnd(bounded(t), append(slices.Clip(b.client), kgo.FetchMaxBytes(1), kgo.FetchMaxPartitionBytes(1)), []string{"u"},
			func(*kgo.Record) error { time.Sleep(time.Second); return nil },
			append(strict, kafka.WithProgress(5*time.Second, func(n int64) {
				reports = append(reports, n)
				at = append(at, time.Since(start))
			}))...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Records != 20 {
			t.Errorf("read %d records, want 20", res.Records)
		}
		if len(reports) < 3 || len(reports) > 4 {
			t.Fatalf("reports %v at %v, want one about every 5s of 20s", reports, at)
		}
		for i, n := range reports {
			if n <= 0 || n > 20 || i > 0 && (n <= reports[i-1] || at[i]-at[i-1] <= 5*time.Second) {
				t.Errorf("reports %v at %v: not growing, or closer than 5s", reports, at)
			}
		}
	})
}

// An error from the record callback ends the read and is returned as it is.
func TestReadToEndCallbackError(t *testing.T) {
	inBubble(t, func(t *testing.T, b *broker) {
		b.produce("u", 0, "u0", "u1", "u2")
		stop := errors.New("stop")
		var calls int
		res, err := kafka.ReadToEnd(bounded(t), b.client, []string{"u"}, func(*kgo.Record) error {
			calls++
			if calls == 2 {
				return stop
			}
			return nil
		}, strict...)
		if err != stop || calls != 2 || res.Records != 1 {
			t.Errorf("got %v after %d calls, %d records; want stop after 2 calls, 1 record", err, calls, res.Records)
		}
	})
}
