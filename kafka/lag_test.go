package kafka

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestGroupLagIgnoresTransactionMarkers pins the lag a console shows on a
// transactional topic: a group that has read every committed record reads
// 0 although a commit marker follows its last record, aborted records are
// never counted, and records still unread are counted with the time of
// the oldest.
func TestGroupLagIgnoresTransactionMarkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "lagged"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	tx, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("lag-test"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic("lagged"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	transaction := func(n int, commit bool, at time.Time) {
		t.Helper()
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			r := &kgo.Record{Value: []byte(strconv.Itoa(i)), Timestamp: at}
			if err := tx.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	transaction(3, true, old)

	// The group reads all three and commits: its offset is the marker's.
	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("lagged"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for got := 0; got < 3; {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		got += fs.NumRecords()
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	one := func() PartitionLag {
		t.Helper()
		lags, err := GroupLag(ctx, admin, "g", "lagged")
		if err != nil {
			t.Fatal(err)
		}
		if len(lags) != 1 {
			t.Fatalf("got %d partitions, want 1: %+v", len(lags), lags)
		}
		return lags[0]
	}
	l := one()
	if l.Committed != 3 || l.Stable != 4 {
		t.Fatalf("committed %d, stable %d; want 3 and 4 (a marker after the last record)", l.Committed, l.Stable)
	}
	if l.Records != 0 || !l.Oldest.IsZero() || l.Estimated {
		t.Fatalf("caught-up group: %+v; want 0 records and no oldest", l)
	}
	if me, _ := cons.GroupMetadata(); l.Owner == "" || l.Member != me {
		t.Fatalf("owner %q, member %q; want the consuming member %q named", l.Owner, l.Member, me)
	}

	// An aborted transaction is never read, then two committed records are.
	transaction(5, false, time.Now())
	newer := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
	transaction(2, true, newer)
	l = one()
	if l.Records != 2 || l.Estimated {
		t.Fatalf("got %+v; want 2 unread records (the 5 aborted and the markers not counted)", l)
	}
	if !l.Oldest.Equal(newer) {
		t.Fatalf("oldest unread at %v, want %v", l.Oldest, newer)
	}
	if age := l.Age(time.Now()); age < 10*time.Second {
		t.Fatalf("age %v, want at least 10s", age)
	}
}

// TestGroupLagOfAnUnknownGroup pins the lag of a group that never
// committed: every record from the start.
func TestGroupLagOfAnUnknownGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 4 {
		r := &kgo.Record{Topic: "plain", Partition: int32(i % 2), Value: []byte("x")}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	lags, err := GroupLag(ctx, cl, "nobody", "plain")
	if err != nil {
		t.Fatal(err)
	}
	SortLags(lags)
	for _, l := range lags {
		if l.Committed != -1 || l.Records != 2 || l.Owner != "" || l.Oldest.IsZero() {
			t.Fatalf("partition %d: %+v; want no commit, 2 records, no owner, an oldest time", l.Partition, l)
		}
	}
}
