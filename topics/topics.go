// Package topics names productstream's Kafka topics and creates them with
// the right configuration.
package topics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/productstream/productstream/schemas"
)

// Names are the topic names for one prefix.
type Names struct {
	Changes  string // every accepted change, in arrival order per key
	Products string // compacted latest state per product key
	Updates  string // the collapsed stream of product updates
	Events   string // analytics events that are not catalog changes
	DLQ      string // records the processor could not decode or apply
	// Deliveries is the JSON log of what the edge decided about every
	// webhook delivery (package deliveries): metadata only, never a body.
	Deliveries string
	// Audit is the JSON audit trail of what operators do (the console
	// writes it).
	Audit string
	// Compacted latest state of the other catalog resources, by key.
	Collections, Categories, Options, Groups, Pos string
	prefix                                        string
}

// Resources maps each catalog resource to its compacted state topic. Every
// state topic is co-partitioned with changes.
func (n Names) Resources() map[string]string {
	return map[string]string{"product": n.Products, "collection": n.Collections, "category": n.Categories,
		"option": n.Options, "group": n.Groups, "pos": n.Pos}
}

// Pending names the changelog of a processor group's pending buffer (used
// in exactly-once mode): compacted, co-partitioned with changes.
func (n Names) Pending(group string) string { return n.prefix + group + "-pending" }

// For returns the topic names under prefix.
func For(prefix string) Names {
	return Names{Changes: prefix + "changes", Products: prefix + "products", Updates: prefix + "updates",
		Events: prefix + "events", DLQ: prefix + "dlq", Collections: prefix + "collections", Categories: prefix + "categories",
		Options: prefix + "options", Groups: prefix + "groups", Pos: prefix + "pos",
		Deliveries: prefix + "deliveries", Audit: prefix + "audit", prefix: prefix}
}

// ByKind maps each schema kind to the topics carrying it. The JSON topics
// (Deliveries, Audit) carry no schema and are not listed.
func (n Names) ByKind() map[schemas.Kind][]string {
	return map[schemas.Kind][]string{schemas.KindChange: {n.Changes}, schemas.KindState: {n.Products}, schemas.KindUpdate: {n.Updates},
		schemas.KindEvent: {n.Events}, schemas.KindResource: {n.Collections, n.Categories, n.Options, n.Groups, n.Pos}}
}

// Spec says how to create the topics.
type Spec struct {
	Partitions        int32
	ReplicationFactor int16 // -1: the broker's default
	// MinInsyncReplicas sets min.insync.replicas on every topic (0: the
	// broker's default).
	MinInsyncReplicas int
	// Configs are extra topic configs by family ("changes", "products",
	// "updates", "events", "dlq", "pending", "deliveries", "audit");
	// products is always created with cleanup.policy=compact. The
	// products family's configs apply to every state topic. deliveries
	// keeps DeliveriesRetention unless its configs set retention.ms;
	// audit keeps the broker's retention unless its configs set one.
	Configs map[string]map[string]string
}

// DeliveriesRetention is the deliveries topic's retention.ms when its
// family's configs set none: a week of what the edge decided.
const DeliveriesRetention = 7 * 24 * time.Hour

// configs returns the creation configs of one topic family.
func (s Spec) configs(family string) map[string]*string {
	out := map[string]*string{}
	if s.MinInsyncReplicas > 0 {
		out["min.insync.replicas"] = kadm.StringPtr(strconv.Itoa(s.MinInsyncReplicas))
	}
	for k, v := range s.Configs[family] {
		out[k] = kadm.StringPtr(v)
	}
	if family == "products" || family == "pending" {
		out["cleanup.policy"] = kadm.StringPtr("compact")
	}
	if _, set := out["retention.ms"]; family == "deliveries" && !set {
		out["retention.ms"] = kadm.StringPtr(strconv.FormatInt(DeliveriesRetention.Milliseconds(), 10))
	}
	return out
}

// EnsurePending creates a processor group's pending changelog if missing,
// compacted and with as many partitions as the changes topic.
func EnsurePending(ctx context.Context, adm *kadm.Client, n Names, group string, spec Spec) error {
	details, err := adm.ListTopics(ctx, n.Changes)
	if err != nil {
		return fmt.Errorf("describe %s: %w", n.Changes, err)
	}
	if err := details.Error(); err != nil {
		return fmt.Errorf("describe %s: %w", n.Changes, err)
	}
	topic := n.Pending(group)
	resp, err := adm.CreateTopic(ctx, int32(len(details[n.Changes].Partitions)), spec.ReplicationFactor, spec.configs("pending"), topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, resp.Err)
	}
	return nil
}

// ErrPartitionMismatch surfaces from Ensure when an existing changes topic
// and a state topic have different partition counts: a key's state would
// then live on another partition number than its changes.
var ErrPartitionMismatch = errors.New("changes and state topics have different partition counts")

// Ensure creates any missing topic with its configuration and checks that
// the changes topic and every state topic are co-partitioned (the JSON
// topics, keyed otherwise, need not be). Existing topics are left as they
// are.
func Ensure(ctx context.Context, adm *kadm.Client, n Names, spec Spec) error {
	configs := map[string]map[string]*string{
		n.Changes:    spec.configs("changes"),
		n.Updates:    spec.configs("updates"),
		n.Events:     spec.configs("events"),
		n.DLQ:        spec.configs("dlq"),
		n.Deliveries: spec.configs("deliveries"),
		n.Audit:      spec.configs("audit"),
	}
	state := []string{n.Changes}
	for _, topic := range n.Resources() {
		configs[topic] = spec.configs("products")
		state = append(state, topic)
	}
	for topic, cfg := range configs {
		resp, err := adm.CreateTopic(ctx, spec.Partitions, spec.ReplicationFactor, cfg, topic)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
		if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, resp.Err)
		}
	}
	// Topics just created may not be in the metadata yet (KRaft
	// propagates it asynchronously): ask again briefly before giving up.
	var (
		details kadm.TopicDetails
		err     error
	)
	for deadline := time.Now().Add(10 * time.Second); ; {
		details, err = adm.ListTopics(ctx, state...)
		if err == nil {
			err = details.Error()
		}
		if err == nil || time.Now().After(deadline) || !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, kerr.LeaderNotAvailable) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	pc := len(details[n.Changes].Partitions)
	for _, topic := range state[1:] {
		if pp := len(details[topic].Partitions); pp != pc {
			return fmt.Errorf("%w: %s has %d, %s has %d", ErrPartitionMismatch, n.Changes, pc, topic, pp)
		}
	}
	return nil
}
