package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// roleSetup is one test's productstream deployment on a backend.
type roleSetup struct {
	b      backend
	prefix string
	names  topics.Names
	cfg    string
	ingest string // base URL
	serde  *schemas.Serde
}

// deploy writes a config for b and starts the ingest and process roles as
// separate processes, then waits until ingest answers.
func deploy(t *testing.T, b backend, partitions int, productsConfigs string) *roleSetup {
	t.Helper()
	prefix := uniquePrefix(t)
	httpAddr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "productstream.yaml")
	t.Setenv("TEST_LISA_SECRET", "s1")
	brokers := `"` + strings.Join(strings.Split(b.brokers, ","), `", "`) + `"`
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
kafka:
  brokers: [%s]
  topic_prefix: %q
  partitions: %d
  topic_configs:
    products: {%s}
schema_registry:
  url: %q
http:
  listen: %q
  drain_delay: 0s
sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    namespace: shop-eu
    secrets: ["${TEST_LISA_SECRET}", "s0"]
    api_keys: ["k1"]
  - name: iimmpact-main
    provider: iimmpact
    namespace: catalog
    secrets: ["i1"]
processor:
  quiet_period: 200ms
  max_delay: 1s
  group: %q
`, brokers, prefix, partitions, productsConfigs, b.registry, httpAddr, prefix+"processor")), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	startRole(t, "ingest", cfg)
	startRole(t, "process", cfg)
	s := &roleSetup{b: b, prefix: prefix, names: topics.For(prefix), cfg: cfg, ingest: "http://" + httpAddr, serde: newSerde(t, b.registry)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := httpClient.Get(s.ingest + "/openapi.json") // the public listener's one non-webhook route
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest did not come up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := s.serde.Register(context.Background(), s.names.ByKind()); err != nil {
		t.Fatal(err)
	}
	return s
}

// notify posts a LiSA notification signed with secret and returns the status.
func (s *roleSetup) notify(t *testing.T, path, secret string, body []byte) int {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "ApiKey k1")
	h.Set("Content-Type", "application/json")
	h.Set("X-Hmac-Signature", hmacHex(secret, body))
	status, err := post(s.ingest+path, h, body)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// deleteProduct writes a delete change for id straight to the changes
// topic, as a provider with deletes will (LiSA has none).
func (s *roleSetup) deleteProduct(t *testing.T, id string) {
	t.Helper()
	ch := schemas.Change{EventID: "delete-" + id, Source: "lisa-main", Provider: "test", Namespace: "shop-eu",
		EventType: "product.deleted", Resource: "product", ProductID: id, Deleted: true, ReceivedAt: time.Now(), Raw: "{}"}
	v, err := s.serde.EncodeChange(&ch)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(clientOpts(t, s.b.brokers), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: s.names.Changes, Key: []byte(ch.Key()), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// latest returns the last record per key on topic.
func latest(recs []*kgo.Record) map[string]*kgo.Record {
	out := map[string]*kgo.Record{}
	for _, r := range recs {
		out[string(r.Key)] = r
	}
	return out
}

// The whole path on a backend: signed notifications through the ingest
// role, merged state and updates from the process role, a delete's
// tombstone, Kafka's partitioning on every topic, and `tail` decoding all.
func TestBackendPipeline(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		// The tombstone is kept for a day so later readers (the Python
		// check in CI) see one.
		s := deploy(t, b, 4, `delete.retention.ms: "86400000"`)
		const products, rounds = 12, 3
		for r := 1; r <= rounds; r++ {
			for p := range products {
				path := "/webhooks/lisa-main"
				if p%2 == 0 {
					path = "/plugin-notifications/plugin-42/updates"
				}
				secret := []string{"s1", "s0"}[r%2]
				body := []byte(fmt.Sprintf(`{"productId":"p%d","price":%d.5,"title":"item %d","round":%d}`, p, r, p, r))
				if status := s.notify(t, path, secret, body); status != http.StatusAccepted {
					t.Fatalf("round %d product %d: status %d", r, p, status)
				}
			}
		}
		if status := s.notify(t, "/webhooks/lisa-main", "wrong", []byte(`{"productId":"intruder"}`)); status != http.StatusUnauthorized {
			t.Fatalf("wrong secret: status %d", status)
		}
		s.deleteProduct(t, "p0")
		// IIMMPACT's other resources get their own state topics.
		for _, ev := range []string{
			`{"type":"category.created","resource":"categories","id":"MOBILE","timestamp":"2026-01-15T10:00:00.000Z","data":{"name":"Mobile"}}`,
			`{"type":"option.created","resource":"options","id":"o1","timestamp":"2026-01-15T10:00:00.000Z","data":{"name":"10 MYR"}}`,
			`{"type":"category.deleted","resource":"categories","id":"MOBILE","timestamp":"2026-01-15T10:05:00.000Z","data":null}`,
		} {
			h := http.Header{}
			h.Set("Content-Type", "application/json")
			h.Set("X-Webhook-Signature", "sha256="+hmacHex("i1", []byte(ev)))
			if status, err := post(s.ingest+"/webhooks/iimmpact-main", h, []byte(ev)); err != nil || status != http.StatusAccepted {
				t.Fatalf("iimmpact %s: %d %v", ev, status, err)
			}
		}
		const otherResources = 3

		// Wait for the processor: every live product at its last round, p0 deleted.
		var state map[string]*kgo.Record
		deadline := time.Now().Add(60 * time.Second)
		for {
			state = latest(readAll(t, b.brokers, s.names.Products))
			done := len(state) == products && state["shop-eu:p0"].Value == nil
			for p := 1; p < products && done; p++ {
				r := state[fmt.Sprintf("shop-eu:p%d", p)]
				st, err := s.serde.DecodeState(context.Background(), r.Value)
				done = err == nil && st.Fields.Price != nil && *st.Fields.Price == fmt.Sprintf("%d.5", rounds)
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("products did not converge: %d keys", len(state))
			}
			time.Sleep(300 * time.Millisecond)
		}
		st, err := s.serde.DecodeState(context.Background(), state["shop-eu:p5"].Value)
		if err != nil {
			t.Fatal(err)
		}
		if *st.Fields.Title != "item 5" || st.ChangeCount != rounds || !strings.Contains(st.Raw, `"round":3`) {
			t.Fatalf("merged state of p5: %+v", st)
		}

		deadline = time.Now().Add(60 * time.Second)
		for {
			cats, opts := latest(readAll(t, b.brokers, s.names.Categories)), latest(readAll(t, b.brokers, s.names.Options))
			if c, o := cats["catalog:MOBILE"], opts["catalog:o1"]; c != nil && c.Value == nil && o != nil && o.Value != nil {
				st, err := s.serde.DecodeState(context.Background(), o.Value)
				if err != nil || st.Resource != "option" || st.ProductID != "o1" || !strings.Contains(st.Raw, `"10 MYR"`) {
					t.Fatalf("option state: %+v %v", st, err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("categories and options did not converge: %d, %d keys", len(cats), len(opts))
			}
			time.Sleep(300 * time.Millisecond)
		}

		changes := readAll(t, b.brokers, s.names.Changes)
		if len(changes) != products*rounds+1+otherResources {
			t.Fatalf("%d changes on %s, want %d (the refused request must write nothing)", len(changes), s.names.Changes, products*rounds+1+otherResources)
		}
		updates := readAll(t, b.brokers, s.names.Updates)
		var counted int
		for _, r := range updates {
			u, err := s.serde.DecodeUpdate(context.Background(), r.Value)
			if err != nil {
				t.Fatal(err)
			}
			counted += int(u.ChangeCount)
		}
		if counted != len(changes)-otherResources {
			t.Fatalf("updates stand for %d changes, %d product changes were accepted", counted, len(changes)-otherResources)
		}
		for _, topic := range []string{s.names.Changes, s.names.Products, s.names.Updates, s.names.Categories, s.names.Options} {
			for _, r := range readAll(t, b.brokers, topic) {
				if want := murmur2Partition(r.Key, 4); r.Partition != want {
					t.Fatalf("%s: key %s on partition %d, Kafka's default partitioner gives %d", topic, r.Key, r.Partition, want)
				}
			}
		}

		// kcat (librdkafka) reads the raw records: keys and partitions agree.
		if out, ok := kcatRead(t, b.brokers, s.names.Changes); ok {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(changes) {
				t.Fatalf("kcat read %d records of %s, want %d", len(lines), s.names.Changes, len(changes))
			}
			for _, l := range lines {
				var key string
				var part int32
				if _, err := fmt.Sscanf(l, "%s %d", &key, &part); err != nil || murmur2Partition([]byte(key), 4) != part {
					t.Fatalf("kcat line %q: key on the wrong partition (%v)", l, err)
				}
			}
		}

		// `productstream tail` decodes every record through the registry,
		// connecting as the roles' configuration file says.
		out, err := exec.Command(binary, "tail", s.names.Products, "--from-beginning", "--exit-at-end",
			"--config", s.cfg, "--brokers", b.brokers, "--registry", b.registry).Output()
		if err != nil {
			t.Fatalf("tail: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if n := len(readAll(t, b.brokers, s.names.Products)); len(lines) != n {
			t.Fatalf("tail printed %d lines for %d records", len(lines), n)
		}
		for _, l := range lines {
			var rec struct {
				Key   string          `json:"key"`
				Value json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("tail line %q: %v", l, err)
			}
			if rec.Key != "shop-eu:p0" && !strings.Contains(string(rec.Value), `"product_id"`) {
				t.Fatalf("tail did not decode %s: %s", rec.Key, rec.Value)
			}
		}
	})
}

// Compaction on the backend's own cleaner: after updates and a delete, the
// products topic holds exactly one record per live key, and the deleted
// key's tombstone is eventually removed.
func TestBackendCompaction(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		// One partition, short segments and tombstone retention, so the
		// broker's cleaner shows its work within seconds.
		s := deploy(t, b, 1, `segment.ms: "300", min.cleanable.dirty.ratio: "0.01", delete.retention.ms: "500", min.compaction.lag.ms: "0"`)
		live := []string{"a", "b", "c"}
		for r := 1; r <= 3; r++ {
			for _, id := range append(live, "gone") {
				if status := s.notify(t, "/webhooks/lisa-main", "s1", []byte(fmt.Sprintf(`{"productId":%q,"price":%d}`, id, r))); status != http.StatusAccepted {
					t.Fatalf("status %d", status)
				}
			}
			time.Sleep(500 * time.Millisecond) // past the quiet period: one state record per key per round
		}
		s.deleteProduct(t, "gone")

		// Keep the log dirty with new keys (each written once) so the
		// cleaner keeps running and the active segment keeps rolling.
		deadline := time.Now().Add(150 * time.Second)
		for i := 0; ; i++ {
			if status := s.notify(t, "/webhooks/lisa-main", "s1", []byte(fmt.Sprintf(`{"productId":"filler-%d"}`, i))); status != http.StatusAccepted {
				t.Fatalf("filler: status %d", status)
			}
			time.Sleep(700 * time.Millisecond)
			recs := readAll(t, b.brokers, s.names.Products)
			perKey := map[string]int{}
			for _, r := range recs {
				perKey[string(r.Key)]++
			}
			ok := perKey["shop-eu:gone"] == 0
			for k, n := range perKey {
				ok = ok && n == 1 && k != ""
			}
			for _, id := range live {
				ok = ok && perKey["shop-eu:"+id] == 1
			}
			if ok {
				for _, r := range recs {
					if strings.HasPrefix(string(r.Key), "shop-eu:filler") {
						continue
					}
					st, err := s.serde.DecodeState(context.Background(), r.Value)
					if err != nil || *st.Fields.Price != "3" {
						t.Fatalf("compaction kept a stale state for %s: %+v %v", r.Key, st, err)
					}
				}
				t.Logf("compacted after %d fillers: %d records for %d live keys, tombstone removed", i+1, len(recs), len(perKey))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not compacted in time: records per key %v", perKey)
			}
		}
	})
}
