package topics

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// newAdmin starts an in-process broker with seeded topics (name ->
// partitions) and returns an admin client of it.
func newAdmin(t *testing.T, seed map[string]int32) *kadm.Client {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	for topic, parts := range seed {
		opts = append(opts, kfake.SeedTopics(parts, topic))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// The JSON topics are named under the prefix and carry no schema.
func TestJSONTopicNames(t *testing.T) {
	n := For("p.")
	if n.Deliveries != "p.deliveries" || n.Audit != "p.audit" {
		t.Fatalf("deliveries %q, audit %q", n.Deliveries, n.Audit)
	}
	for kind, topics := range n.ByKind() {
		if slices.Contains(topics, n.Deliveries) || slices.Contains(topics, n.Audit) {
			t.Fatalf("schema kind %v lists a JSON topic: %v", kind, topics)
		}
	}
}

// topicConfig is the value and source of one config of topic.
func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) (string, kmsg.ConfigSource) {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe %s: %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue(), c.Source
		}
	}
	return "", kmsg.ConfigSourceUnknown
}

// Ensure creates deliveries with a week's retention and audit with the
// broker's, unless the family's configs say otherwise.
func TestEnsureCreatesJSONTopics(t *testing.T) {
	for _, tc := range []struct {
		name              string
		configs           map[string]map[string]string
		deliveries, audit string // "": not set on the topic
	}{
		{"defaults", nil, "604800000", ""},
		{"overridden", map[string]map[string]string{"deliveries": {"retention.ms": "3600000"}, "audit": {"retention.ms": "86400000"}},
			"3600000", "86400000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := newAdmin(t, nil)
			n := For("p.")
			if err := Ensure(context.Background(), adm, n, Spec{Partitions: 3, ReplicationFactor: -1, Configs: tc.configs}); err != nil {
				t.Fatal(err)
			}
			details, err := adm.ListTopics(context.Background(), n.Deliveries, n.Audit)
			if err != nil || details.Error() != nil {
				t.Fatalf("list: %v %v", err, details.Error())
			}
			for _, topic := range []string{n.Deliveries, n.Audit} {
				if got := len(details[topic].Partitions); got != 3 {
					t.Fatalf("%s has %d partitions, want 3", topic, got)
				}
			}
			for topic, want := range map[string]string{n.Deliveries: tc.deliveries, n.Audit: tc.audit} {
				v, src := topicConfig(t, adm, topic, "retention.ms")
				set := src == kmsg.ConfigSourceDynamicTopicConfig
				if want == "" && set || want != "" && (!set || v != want) {
					t.Fatalf("%s retention.ms = %q (source %v), want %q", topic, v, src, want)
				}
			}
		})
	}
}

// The JSON topics are keyed by source, not by product: their partition
// counts are not held to the changes topic's, while a state topic's still
// are.
func TestEnsureLeavesJSONTopicsOutOfCoPartitioning(t *testing.T) {
	n := For("p.")
	seed := map[string]int32{n.Changes: 3, n.Deliveries: 1, n.Audit: 5}
	for _, topic := range n.Resources() {
		seed[topic] = 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := Ensure(ctx, newAdmin(t, seed), n, Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		t.Fatalf("JSON topics of other partition counts: %v", err)
	}
	seed[n.Products] = 2
	if err := Ensure(ctx, newAdmin(t, seed), n, Spec{Partitions: 3, ReplicationFactor: -1}); !errors.Is(err, ErrPartitionMismatch) {
		t.Fatalf("a state topic of 2 partitions: %v, want ErrPartitionMismatch", err)
	}
}

// Ensure creates the pending changelog of each group it is given with the
// other topics: compacted, with as many partitions as an existing changes
// topic (not Spec.Partitions).
func TestEnsureCreatesPendingChangelogs(t *testing.T) {
	n := For("p.")
	seed := map[string]int32{n.Changes: 5}
	for _, topic := range n.Resources() {
		seed[topic] = 5
	}
	adm := newAdmin(t, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Ensure(ctx, adm, n, Spec{Partitions: 3, ReplicationFactor: -1}, "g1", "g2")
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{n.Pending("g1"), n.Pending("g2")} {
		details, err := adm.ListTopics(ctx, topic)
		if err != nil || details.Error() != nil {
			t.Fatalf("list %s: %v %v", topic, err, details.Error())
		}
		if got := len(details[topic].Partitions); got != 5 {
			t.Fatalf("%s has %d partitions, want 5", topic, got)
		}
		if v, _ := topicConfig(t, adm, topic, "cleanup.policy"); v != "compact" {
			t.Fatalf("%s cleanup.policy = %q, want compact", topic, v)
		}
	}
	// Run again on what exists, it creates nothing and checks as before.
	if err := Ensure(ctx, adm, n, Spec{Partitions: 3, ReplicationFactor: -1}, "g1"); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePending(ctx, adm, n, "g1", Spec{Partitions: 3, ReplicationFactor: -1}); err != nil {
		t.Fatal(err)
	}
}
