package processor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// After the changes topic is re-created, the processor refuses to run (its
// restored state is ahead of the topic's offsets), and once the epoch is
// raised, a new change at a reused offset is applied with a version above
// every earlier one, not skipped as already applied.
func TestVersionEpochAfterChangesIsRecreated(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		const quiet = 100 * time.Millisecond
		stop := e.startAssigned(quiet, time.Second)
		var last int64
		for range 3 {
			last = e.change("p", schemas.Fields{Title: str("old")}, false).Offset
		}
		first := e.updates(e.read(e.names.Updates, 1, 10*time.Second))
		if len(first) != 1 || first[0].Version != last {
			t.Fatalf("first update %+v, want version %d (the last change's offset under epoch 0)", first, last)
		}
		stop()

		ctx := context.Background()
		adm := kadm.NewClient(e.client)
		if _, err := adm.DeleteTopic(ctx, e.names.Changes); err != nil {
			t.Fatal(err)
		}
		if err := topics.Ensure(ctx, adm, e.names, topics.Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
			t.Fatal(err)
		}
		// A producer that never knew the old topic's ID.
		e.client = e.newClient(kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0))
		t.Cleanup(e.client.Close)
		p, err := New(withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "g", QuietPeriod: quiet,
			MaxDelay: time.Second, Serde: e.serde, Log: e.log, ExactlyOnce: e.eos, Dialer: e.dial, Metrics: e.metrics}))
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.Run(rctx); !errors.Is(err, ErrChangesLost) {
			t.Fatalf("Run after changes was re-created: %v, want ErrChangesLost", err)
		}

		// The documented recovery: raise the epoch.
		e.startWith(Config{QuietPeriod: quiet, MaxDelay: time.Second, VersionEpoch: 1})
		again := e.change("p", schemas.Fields{Title: str("new")}, false).Offset
		if again > last {
			t.Fatalf("the re-created topic gave offset %d, past the old %d: the test shows nothing", again, last)
		}
		ups := e.updates(e.read(e.names.Updates, 2, 10*time.Second))
		if len(ups) != 2 {
			t.Fatalf("%d updates, want the new change's update too", len(ups))
		}
		if got, want := ups[1].Version, Version(1, again); got != want || *ups[1].State.Fields.Title != "new" {
			t.Fatalf("update after the epoch was raised: version %d title %q, want version %d (epoch 1) and title new",
				got, *ups[1].State.Fields.Title, want)
		}
	})
}

// New refuses an epoch out of range.
func TestVersionEpochRange(t *testing.T) {
	for _, epoch := range []int{-1, MaxEpoch + 1} {
		_, err := New(withDefaults(Config{Brokers: []string{"x:1"}, Topics: topics.For("t."), Group: "g", QuietPeriod: time.Second,
			MaxDelay: time.Second, Serde: schemas.NewSerde(nil), VersionEpoch: epoch}))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "VersionEpoch" {
			t.Errorf("epoch %d: %v, want a ConfigError on VersionEpoch", epoch, err)
		}
	}
	if v := Version(MaxEpoch, 1<<EpochShift-1); v <= 0 {
		t.Fatalf("the highest version %d is not a positive int64", v)
	}
}
