// Package topics names productstream's Kafka topics and creates them with
// the right configuration.
package topics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	topic := n.Pending(group)
	details, err := describe(ctx, adm, n.Changes, topic)
	if err != nil {
		return fmt.Errorf("describe %s: %w", n.Changes, err)
	}
	if err := details[n.Changes].Err; err != nil {
		return fmt.Errorf("describe %s: %w", n.Changes, err)
	}
	if details[topic].Err == nil {
		return nil // created by Ensure, or by an earlier start
	}
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

// Ensure creates any missing topic with its configuration, and the
// pending changelog of each of groups (as EnsurePending does), and checks
// that the changes topic and every state topic are co-partitioned (the
// JSON topics, keyed otherwise, need not be). Existing topics are left as
// they are.
//
// It asks the broker once which topics exist, so that a start on topics
// that exist costs one round trip; it creates the missing ones at once,
// one request per distinct configuration, and returns once every
// partition of theirs has a leader that answers for it, so that the
// clients that use them next find them.
func Ensure(ctx context.Context, adm *kadm.Client, n Names, spec Spec, groups ...string) error {
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
	all := slices.Sorted(maps.Keys(configs))
	for _, g := range groups {
		all = append(all, n.Pending(g))
	}
	details, err := describe(ctx, adm, all...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	partitions := map[string]int32{} // of the topics that exist
	for topic, d := range details {
		if d.Err == nil {
			partitions[topic] = int32(len(d.Partitions))
		}
	}
	exists := func(topic string) bool {
		d, listed := details[topic]
		return listed && !errors.Is(d.Err, kerr.UnknownTopicOrPartition)
	}
	// The pending changelogs have as many partitions as changes, which
	// is created with spec.Partitions when it is missing.
	pendingCount, known := partitions[n.Changes]
	if !exists(n.Changes) {
		pendingCount, known = spec.Partitions, true
	}
	var (
		missing []creation
		waitFor []string // the topics created, and those without a leader yet
	)
	for _, topic := range all {
		if _, ok := partitions[topic]; ok {
			continue
		}
		_, ours := configs[topic]
		if !ours && !known {
			continue // a pending changelog, left to EnsurePending
		}
		waitFor = append(waitFor, topic)
		if exists(topic) {
			continue // without a leader yet
		}
		c := creation{topic: topic, partitions: spec.Partitions, configs: configs[topic]}
		if !ours {
			c.partitions, c.configs = pendingCount, spec.configs("pending")
		}
		missing = append(missing, c)
	}
	if len(waitFor) == 0 {
		return coPartitioned(n, state, partitions)
	}
	if err := create(ctx, adm, spec.ReplicationFactor, missing); err != nil {
		return err
	}
	// Topics just created may not be in the metadata yet (KRaft
	// propagates it asynchronously), and a broker lists a partition's
	// leader before it has made the partition: ask again briefly before
	// giving up, until every partition answers a ListOffsets.
	wait := 10 * time.Millisecond
	for deadline := time.Now().Add(10 * time.Second); ; wait = min(2*wait, 50*time.Millisecond) {
		details, err = describe(ctx, adm, waitFor...)
		if err == nil {
			err = led(details)
		}
		if err == nil {
			var ends kadm.ListedOffsets
			if ends, err = adm.ListEndOffsets(ctx, waitFor...); err == nil {
				err = ends.Error()
			}
		}
		if err == nil || time.Now().After(deadline) || !errors.Is(err, kerr.UnknownTopicOrPartition) &&
			!errors.Is(err, kerr.LeaderNotAvailable) && !errors.Is(err, kerr.NotLeaderForPartition) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	for topic, d := range details {
		partitions[topic] = int32(len(d.Partitions))
	}
	return coPartitioned(n, state, partitions)
}

// creation is a topic that Ensure creates.
type creation struct {
	topic      string
	partitions int32
	configs    map[string]*string
}

// create creates the topics, one request per distinct partition count and
// configuration, all at once. A topic that exists meanwhile (created by
// another process starting too) is no error.
func create(ctx context.Context, adm *kadm.Client, replicationFactor int16, topics []creation) error {
	type batch struct {
		partitions int32
		configs    map[string]*string
		topics     []string
	}
	var batches []*batch
	byKey := map[string]*batch{}
	for _, c := range topics {
		key := fmt.Sprint(c.partitions, configKey(c.configs))
		b := byKey[key]
		if b == nil {
			b = &batch{partitions: c.partitions, configs: c.configs}
			byKey[key] = b
			batches = append(batches, b)
		}
		b.topics = append(b.topics, c.topic)
	}
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() {
			resps, err := adm.CreateTopics(ctx, b.partitions, replicationFactor, b.configs, b.topics...)
			if err != nil {
				errs[i] = fmt.Errorf("create topics %s: %w", strings.Join(b.topics, ", "), err)
				return
			}
			for _, topic := range b.topics {
				if r := resps[topic]; r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
					errs[i] = errors.Join(errs[i], fmt.Errorf("create topic %s: %w", topic, r.Err))
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// configKey is a canonical text of configs, to tell equal ones.
func configKey(configs map[string]*string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(configs)) {
		fmt.Fprintf(&b, "%q=", k)
		if v := configs[k]; v != nil {
			fmt.Fprintf(&b, "%q", *v)
		}
		b.WriteByte(';')
	}
	return b.String()
}

// describe is the broker's metadata of topics, asked now. kadm answers
// ListTopics from its client's metadata cache, which keeps an answer, an
// error for a topic just created included, for the client's minimum
// metadata age (5 s by default); asking for the authorized operations too
// makes it send the request, since the cache does not hold them.
func describe(ctx context.Context, adm *kadm.Client, topics ...string) (kadm.TopicDetails, error) {
	return adm.ListTopics(kadm.WithAuthorizedOps(ctx), topics...)
}

// led is the first error of details, a topic's or a partition's, or
// LeaderNotAvailable for a partition without a leader.
func led(details kadm.TopicDetails) error {
	if err := details.Error(); err != nil {
		return err
	}
	for _, d := range details {
		for _, p := range d.Partitions {
			if p.Err != nil {
				return p.Err
			}
			if p.Leader < 0 {
				return kerr.LeaderNotAvailable
			}
		}
	}
	return nil
}

// coPartitioned checks that every state topic has as many partitions as
// changes.
func coPartitioned(n Names, state []string, partitions map[string]int32) error {
	pc := partitions[n.Changes]
	for _, topic := range state[1:] {
		if pp := partitions[topic]; pp != pc {
			return fmt.Errorf("%w: %s has %d, %s has %d", ErrPartitionMismatch, n.Changes, pc, topic, pp)
		}
	}
	return nil
}
