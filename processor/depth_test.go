package processor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/jsondepth"
	"github.com/productstream/productstream/schemas"
)

// produceRaw writes a change of product id whose raw is raw, and returns
// the record as written.
func (e *env) produceRaw(id, raw string) *kgo.Record {
	e.t.Helper()
	return e.produce(schemas.Change{EventID: "e-" + id, Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: id, ReceivedAt: time.Now(), Raw: raw})
}

// deepRaw is a LiSA body for id whose "x" nests arrays so that the whole
// body is depth levels deep.
func deepRaw(id string, depth int) string {
	return fmt.Sprintf(`{"productId":%q,"x":%s%s}`, id, strings.Repeat("[", depth-1), strings.Repeat("]", depth-1))
}

// Regression (issue 10): a change whose raw nests deeper than the default
// max_json_depth (64) goes to the DLQ with ErrRawTooDeep and is not merged;
// one exactly at the limit and the next change of another key are merged.
func TestTooDeepRawGoesToDLQ(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		e.start(100*time.Millisecond, time.Second)
		deep := e.produceRaw("deep", deepRaw("deep", 20000))
		e.produceRaw("edge", deepRaw("edge", jsondepth.Default))
		e.produceRaw("next", `{"productId":"next","title":"after the deep one"}`)

		ups := e.updates(e.read(e.names.Updates, 2, 10*time.Second))
		var got []string
		for _, u := range ups {
			got = append(got, u.ProductID)
			if u.ProductID == "edge" && u.State.Raw != deepRaw("edge", jsondepth.Default) {
				t.Fatalf("the change at the limit was not merged whole: %.80s", u.State.Raw)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"edge", "next"}) {
			t.Fatalf("updates for %v, want edge and next", got)
		}
		var products []string
		for _, r := range e.read(e.names.Products, 3, 2*time.Second) {
			products = append(products, string(r.Key))
		}
		slices.Sort(products)
		if !slices.Equal(products, []string{"ns:edge", "ns:next"}) {
			t.Fatalf("products holds %v, want ns:edge and ns:next", products)
		}
		dlq := e.read(e.names.DLQ, 2, 2*time.Second)
		if len(dlq) != 1 || string(dlq[0].Key) != "ns:deep" || string(dlq[0].Value) != string(deep.Value) {
			t.Fatalf("DLQ holds %d records, want the deep change alone", len(dlq))
		}
		h := map[string]string{}
		for _, kv := range dlq[0].Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h["dlq-error"] != "raw JSON nests too deep: more than 64 levels" || h["dlq-origin-offset"] != fmt.Sprint(deep.Offset) ||
			h["dlq-origin-partition"] != fmt.Sprint(deep.Partition) {
			t.Fatalf("DLQ headers %v", h)
		}
	})
}

// The check runs where records are decoded: a decoded change deeper than
// the configured bound carries ErrRawTooDeep, one at it none.
func TestDecodeChangeRefusesDeepRaw(t *testing.T) {
	e := newEnv(t)
	p, err := New(withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "g", Serde: e.serde,
		QuietPeriod: time.Second, MaxDelay: time.Second, MaxJSONDepth: 3}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.client.Close)
	for depth, wantErr := range map[int]bool{3: false, 4: true} {
		ch := schemas.Change{EventID: "e", Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
			Resource: "product", ProductID: "p", ReceivedAt: time.Now(), Raw: deepRaw("p", depth)}
		v, err := e.serde.EncodeChange(&ch)
		if err != nil {
			t.Fatal(err)
		}
		d := decoded{rec: &kgo.Record{Value: v}}
		p.decodeChange(&d, nil)
		if errors.Is(d.err, ErrRawTooDeep) != wantErr || !wantErr && d.err != nil {
			t.Fatalf("depth %d with max_json_depth 3: err %v", depth, d.err)
		}
	}
}
