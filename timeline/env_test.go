package timeline

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/schemas/schemastest"
	"github.com/productstream/productstream/topics"
)

// The tests read from kfake, an in-process Kafka, with the schemas on
// srfake. Most write the records by hand, as ingest and the processor
// write them, to place them exactly (offsets, timestamps, partitions);
// TestReadShowsTheWholePath runs the real processor.

const group = "g"

type env struct {
	t       *testing.T
	cluster *kfake.Cluster
	names   topics.Names
	serde   *schemas.Serde
	cl      *kgo.Client // produces with Kafka's murmur2 partitioner; also the readers' client
	// dial reaches the broker: kfake's virtual network, or nil for TCP.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newSerde registers the schemas of names on a fake registry of its own.
// Once registered, the serde encodes and decodes without the registry.
func newSerde(t testing.TB, names topics.Names) *schemas.Serde {
	t.Helper()
	return schemastest.Serde(t, names.ByKind())
}

// newEnv is a cluster of three brokers on TCP, so that partitions have
// different leaders, with the topics of prefix "t." in partitions
// partitions each.
func newEnv(t *testing.T, partitions int32) *env {
	t.Helper()
	names := topics.For("t.")
	return newEnvOn(t, newSerde(t, names), nil, 3, partitions)
}

// newEnvOn starts brokers on vn (nil: TCP) and creates the topics.
func newEnvOn(t *testing.T, serde *schemas.Serde, vn *kfake.VirtualNetwork, brokers int, partitions int32) *env {
	t.Helper()
	e := &env{t: t, names: topics.For("t."), serde: serde}
	opts := []kfake.Opt{kfake.NumBrokers(brokers)}
	if vn != nil {
		opts = append(opts, kfake.ListenFn(vn.Listen), kfake.Ports(9092))
		e.dial = vn.DialContext
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	e.cluster = cluster
	e.cl = e.newClient(kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0))
	t.Cleanup(e.cl.Close)
	if err := topics.Ensure(context.Background(), kadm.NewClient(e.cl), e.names, topics.Spec{Partitions: partitions, ReplicationFactor: -1}); err != nil {
		t.Fatal(err)
	}
	return e
}

// newClient is a client of the cluster, on its network, with opts.
func (e *env) newClient(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(e.cluster.ListenAddrs()...)}, opts...)
	if e.dial != nil {
		opts = append(opts, kgo.Dialer(e.dial))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// ensurePending creates group's pending changelog, as the processor does.
func (e *env) ensurePending() {
	e.t.Helper()
	if err := topics.EnsurePending(context.Background(), kadm.NewClient(e.cl), e.names, group, topics.Spec{ReplicationFactor: -1}); err != nil {
		e.t.Fatal(err)
	}
}

// reader is a Reader of the env's topics and group.
func (e *env) reader(opts ...Option) *Reader {
	e.t.Helper()
	r, err := New(e.cl, e.serde, e.names, group, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// read reads q, failing the test on an error.
func (e *env) read(r *Reader, q Query) *Timeline {
	e.t.Helper()
	tl, err := r.Read(context.Background(), q)
	if err != nil {
		e.t.Fatal(err)
	}
	return tl
}

// produce writes records and returns them as written (partition, offset).
func (e *env) produce(records ...*kgo.Record) []*kgo.Record {
	e.t.Helper()
	if err := e.cl.ProduceSync(context.Background(), records...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	return records
}

// change is a change record of key as ingest writes it, at ts (zero: the
// producer's clock), setting the title and raw JSON.
func (e *env) change(key, eventID string, ts time.Time, title, raw string) *kgo.Record {
	e.t.Helper()
	ns, id, _ := strings.Cut(key, ":")
	ch := schemas.Change{EventID: eventID, Source: "src", Provider: "lisa", Namespace: ns, EventType: "product.updated",
		ProductID: id, ReceivedAt: time.Now(), Raw: raw}
	if title != "" {
		ch.Fields.Title = &title
	}
	v, err := e.serde.EncodeChange(&ch)
	if err != nil {
		e.t.Fatal(err)
	}
	return &kgo.Record{Topic: e.names.Changes, Key: []byte(key), Value: v, Timestamp: ts,
		Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte(eventID)}, {Key: "source", Value: []byte("src")}}}
}

// state is a products record of key as the processor writes it.
func (e *env) state(key string, version int64, title string) *kgo.Record {
	e.t.Helper()
	ns, id, _ := strings.Cut(key, ":")
	st := schemas.State{Namespace: ns, ProductID: id, Version: version, Raw: `{"a":1}`, UpdatedAt: time.Now(),
		FieldTimes: map[string]int64{"fields.title": 1_700_000_000_000}}
	st.Fields.Title = &title
	v, err := e.serde.EncodeState(&st)
	if err != nil {
		e.t.Fatal(err)
	}
	return &kgo.Record{Topic: e.names.Products, Key: []byte(key), Value: v,
		Headers: []kgo.RecordHeader{{Key: "version", Value: []byte(strconv.FormatInt(version, 10))}}}
}

// tombstone is the products record of a deleted key, as the processor
// writes it: no value, its version and delete time in headers.
func (e *env) tombstone(key string, version int64, deletedAt time.Time) *kgo.Record {
	return &kgo.Record{Topic: e.names.Products, Key: []byte(key), Headers: []kgo.RecordHeader{
		{Key: "version", Value: []byte(strconv.FormatInt(version, 10))},
		{Key: "deleted-at", Value: []byte(strconv.FormatInt(deletedAt.UnixMilli(), 10))}}}
}

// neighbour is a key other than key on its partition of n partitions.
func neighbour(key string, n int) string {
	for i := 0; ; i++ {
		other := fmt.Sprintf("shop:other-%d", i)
		if partitionOf([]byte(other), n) == partitionOf([]byte(key), n) {
			return other
		}
	}
}
