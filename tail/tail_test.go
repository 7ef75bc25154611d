package tail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/registry"
)

// --exit-at-end prints the committed records present at start, never an
// aborted one, and exits; without --from-beginning it prints nothing; a
// missing topic is an error.
func TestRunExitAtEnd(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	reg := srfake.New()
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.TransactionalID("tx"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i, commit := range []bool{true, false, true} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		value := []byte(map[bool]string{true: "kept", false: "aborted"}[commit])
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: int32(i % 2), Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(topic string, fromBeginning bool) ([]Line, error) {
		var out bytes.Buffer
		err := Run(ctx, Options{Kafka: kafka.Connection{Brokers: cluster.ListenAddrs()}, Registry: registry.Plain(reg.URL()), Topic: topic,
			FromBeginning: fromBeginning, ExitAtEnd: true, Idle: time.Minute}, &out)
		var lines []Line
		for sc := bufio.NewScanner(&out); sc.Scan(); {
			var l Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			lines = append(lines, l)
		}
		return lines, err
	}

	lines, err := run("t", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || string(lines[0].Value) != `"kept"` || string(lines[1].Value) != `"kept"` {
		t.Errorf("printed %+v, want the two committed records", lines)
	}
	if lines, err := run("t", false); err != nil || len(lines) != 0 {
		t.Errorf("without --from-beginning: printed %+v, %v; want nothing", lines, err)
	}
	for _, from := range []bool{true, false} {
		if _, err := run("missing", from); !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("a missing topic (from beginning %v): %v, want UNKNOWN_TOPIC_OR_PARTITION", from, err)
		}
	}
}
