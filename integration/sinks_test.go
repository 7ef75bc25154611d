package integration

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink/sinktest"
	"github.com/productstream/productstream/topics"
)

// The sinks end to end: `dev` (or the `sink` role) writing the processor's
// topics to the real PostgreSQL, Redis and OpenSearch of this machine
// (sinktest.StartBackend) and to a webhook receiver in the test, which
// checks every signature itself. Every name a test creates on the shared
// backends is unique to its run, and removed when the test passes.

// devTopics are the topics of `dev` with the default prefix.
var devTopics = topics.For(config.DefaultTopicPrefix)

// demoConfig is the built-in demo source (config.Demo) written out, with a
// short quiet period, followed by extra (a sinks section).
func demoConfig(extra string) string {
	return fmt.Sprintf(`
sources:
  - name: %s
    provider: lisa
    id: %s
    secrets: [%q]
    api_keys: [%q]
processor:
  quiet_period: 200ms
  max_delay: 1s
`, config.DemoSource, config.DemoID, config.DemoSecret, config.DemoAPIKey) + extra
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runID is unique to one run of a test, in the characters every backend
// accepts in a name (lower-case letters and digits).
func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixNano(), 36) + fmt.Sprintf("%x", b)
}

// notifyDemo posts a LiSA notification for the demo source, signed as LiSA
// signs (hex HMAC of the body), and wants 202. It is safe from any goroutine.
func notifyDemo(dev *devProc, body []byte) error {
	h := http.Header{}
	h.Set("Authorization", "ApiKey "+config.DemoAPIKey)
	h.Set("Content-Type", "application/json")
	h.Set("X-Hmac-Signature", hmacHex(config.DemoSecret, body))
	status, err := post(dev.ingest+"/plugin-notifications/"+config.DemoID+"/updates", h, body)
	if err != nil {
		return fmt.Errorf("notify %s: %w", body, err)
	}
	if status != http.StatusAccepted {
		return fmt.Errorf("notify %s: status %d, want 202", body, status)
	}
	return nil
}

// deleteDemo writes a delete of the demo source's product id straight to
// the changes topic, as a provider with deletes will (LiSA has none; the
// pipeline test does the same).
func deleteDemo(t *testing.T, dev *devProc, serde *schemas.Serde, id string) {
	t.Helper()
	ch := schemas.Change{EventID: "delete-" + id + "-" + runID(), Source: config.DemoSource, Provider: "test",
		Namespace: config.DemoSource, EventType: "product.deleted", Resource: "product", ProductID: id,
		Deleted: true, ReceivedAt: time.Now(), Raw: "{}"}
	v, err := serde.EncodeChange(&ch)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(dev.kafka), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: devTopics.Changes, Key: []byte(ch.Key()), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// product is a key's latest record on a topic: what every sink of that
// topic must end up holding.
type product struct {
	version int64
	deleted bool
	price   string // "" when deleted or never sent
}

func (p product) String() string {
	if p.deleted {
		return fmt.Sprintf("deleted at version %d", p.version)
	}
	return fmt.Sprintf("version %d price %q", p.version, p.price)
}

// readProducts returns the latest record of every key on the products
// topic: a state, or a tombstone with the version of its header.
func readProducts(t *testing.T, brokers string, serde *schemas.Serde) map[string]product {
	t.Helper()
	out := map[string]product{}
	for key, r := range latest(readAll(t, brokers, devTopics.Products)) {
		if r.Value == nil {
			p := product{deleted: true}
			for _, h := range r.Headers {
				if h.Key == "version" {
					v, err := strconv.ParseInt(string(h.Value), 10, 64)
					if err != nil {
						t.Fatalf("tombstone of %s at offset %d: version header %q: %v", key, r.Offset, h.Value, err)
					}
					p.version = v
				}
			}
			if p.version == 0 {
				t.Fatalf("tombstone of %s at offset %d carries no version header", key, r.Offset)
			}
			out[key] = p
			continue
		}
		st, err := serde.DecodeState(context.Background(), r.Value)
		if err != nil {
			t.Fatalf("state of %s at offset %d: %v", key, r.Offset, err)
		}
		p := product{version: st.Version}
		if st.Fields.Price != nil {
			p.price = *st.Fields.Price
		}
		out[key] = p
	}
	return out
}

// readUpdates returns the latest update of every key on the updates topic.
func readUpdates(t *testing.T, brokers string, serde *schemas.Serde) map[string]product {
	t.Helper()
	out := map[string]product{}
	for key, r := range latest(readAll(t, brokers, devTopics.Updates)) {
		u, err := serde.DecodeUpdate(context.Background(), r.Value)
		if err != nil {
			t.Fatalf("update of %s at offset %d: %v", key, r.Offset, err)
		}
		p := product{version: u.Version, deleted: u.Deleted}
		if u.State != nil && u.State.Fields.Price != nil {
			p.price = *u.State.Fields.Price
		}
		out[key] = p
	}
	return out
}

// held is what one backend holds for one key.
type held struct {
	found   bool
	version int64
	deleted bool
	price   string
	// visible: readers see it (through the OpenSearch alias, in the
	// PostgreSQL view; in Redis, a hash with deleted = 0).
	visible bool
	note    string // anything odd found while reading
}

func (h held) String() string {
	if !h.found {
		return "nothing" + h.note
	}
	return fmt.Sprintf("version %d deleted=%v price %q visible=%v%s", h.version, h.deleted, h.price, h.visible, h.note)
}

// matches reports whether h is what a sink must hold for want.
func (h held) matches(want product) bool {
	if !h.found || h.version != want.version || h.deleted != want.deleted || h.visible == want.deleted {
		return false
	}
	return want.deleted || h.price == want.price
}

// priceOf reads fields.price of a record value rendered as JSON.
func priceOf(state json.RawMessage) (string, error) {
	var v struct {
		Fields struct {
			Price *string `json:"price"`
		} `json:"fields"`
	}
	if err := json.Unmarshal(state, &v); err != nil {
		return "", err
	}
	if v.Fields.Price == nil {
		return "", nil
	}
	return *v.Fields.Price, nil
}

// backendReader reads what a backend holds for the keys of want; extra
// lists the keys it holds that want does not name.
type backendReader func(ctx context.Context, want map[string]product) (got map[string]held, extra []string, err error)

// openSearchReader reads the sink whose alias is alias: each key's
// document by GET on the live generation index (deleted markers included),
// and the keys readers see by a search through the alias, after a refresh.
func openSearchReader(base, alias string) backendReader {
	return func(ctx context.Context, want map[string]product) (map[string]held, []string, error) {
		var aliases map[string]json.RawMessage
		if err := osJSON(ctx, http.MethodGet, base+"/_alias/"+alias, nil, &aliases); err != nil {
			return nil, nil, err
		}
		if len(aliases) != 1 {
			return nil, nil, fmt.Errorf("alias %s points at %d indexes: %v", alias, len(aliases), slices.Collect(mapKeys(aliases)))
		}
		gen := slices.Collect(mapKeys(aliases))[0]
		if err := osJSON(ctx, http.MethodPost, base+"/"+alias+"/_refresh", nil, nil); err != nil {
			return nil, nil, err
		}
		var found struct {
			Hits struct {
				Hits []struct {
					ID string `json:"_id"`
				} `json:"hits"`
			} `json:"hits"`
		}
		query := map[string]any{"size": 10000, "_source": false, "query": map[string]any{"match_all": map[string]any{}}}
		if err := osJSON(ctx, http.MethodPost, base+"/"+alias+"/_search", query, &found); err != nil {
			return nil, nil, err
		}
		visible := map[string]bool{}
		for _, h := range found.Hits.Hits {
			visible[h.ID] = true
		}
		got := map[string]held{}
		for key := range want {
			var doc struct {
				Found   bool  `json:"found"`
				Version int64 `json:"_version"`
				Source  struct {
					Version int64           `json:"version"`
					Deleted bool            `json:"deleted"`
					State   json.RawMessage `json:"state"`
				} `json:"_source"`
			}
			status, body, err := osDo(ctx, http.MethodGet, base+"/"+gen+"/_doc/"+url.PathEscape(key), nil)
			if err != nil {
				return nil, nil, err
			}
			if status != http.StatusOK && status != http.StatusNotFound {
				return nil, nil, fmt.Errorf("GET %s/_doc/%s: %d %s", gen, key, status, body)
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				return nil, nil, fmt.Errorf("GET %s/_doc/%s: %v: %s", gen, key, err, body)
			}
			if !doc.Found {
				got[key] = held{visible: visible[key]}
				continue
			}
			h := held{found: true, version: doc.Version, deleted: doc.Source.Deleted, visible: visible[key]}
			if doc.Source.Version != doc.Version {
				h.note = fmt.Sprintf(" (_source.version %d)", doc.Source.Version)
			}
			if len(doc.Source.State) > 0 && string(doc.Source.State) != "null" {
				if h.price, err = priceOf(doc.Source.State); err != nil {
					h.note += fmt.Sprintf(" (state: %v)", err)
				}
			}
			got[key] = h
		}
		var extra []string
		for key := range visible {
			if _, ok := want[key]; !ok {
				extra = append(extra, key)
			}
		}
		var count struct {
			Count int `json:"count"`
		}
		if err := osJSON(ctx, http.MethodGet, base+"/"+gen+"/_count", nil, &count); err != nil {
			return nil, nil, err
		}
		if count.Count != len(want) {
			extra = append(extra, fmt.Sprintf("(%s holds %d documents for %d keys)", gen, count.Count, len(want)))
		}
		return got, extra, nil
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// osDo sends one request to OpenSearch and returns its status and body.
func osDo(ctx context.Context, method, u string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// osJSON sends one request to OpenSearch, wants a 2xx and decodes the answer
// into out (unless nil).
func osJSON(ctx context.Context, method, u string, body, out any) error {
	status, b, err := osDo(ctx, method, u, body)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, u, status, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %v: %s", method, u, err, b)
	}
	return nil
}

// postgresReader reads the sink's generation-1 table (deleted markers
// included) and its view <table>_live, in one snapshot.
func postgresReader(dsn, table string) backendReader { return pgGenerationReader(dsn, table, 1) }

// keys under prefix that want does not name.
func redisReader(rdb *goredis.Client, prefix string) backendReader {
	return func(ctx context.Context, want map[string]product) (map[string]held, []string, error) {
		got, err := redisHashes(ctx, rdb, prefix, slices.Collect(mapKeys(want)))
		if err != nil {
			return nil, nil, err
		}
		var extra []string
		all, err := redisKeys(ctx, rdb, prefix)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range all {
			if _, ok := want[k]; !ok && k != "@generations" {
				extra = append(extra, k)
			}
		}
		return got, extra, nil
	}
}

// redisHashes reads the hashes <prefix><key> of keys in one pipeline.
func redisHashes(ctx context.Context, rdb *goredis.Client, prefix string, keys []string) (map[string]held, error) {
	cmds := make([]*goredis.MapStringStringCmd, len(keys))
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.HGetAll(ctx, prefix+k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	got := map[string]held{}
	for i, k := range keys {
		m := cmds[i].Val()
		if len(m) == 0 {
			got[k] = held{}
			continue
		}
		h := held{found: true, deleted: m["deleted"] == "1", visible: m["deleted"] == "0"}
		if h.version, err = strconv.ParseInt(m["version"], 10, 64); err != nil {
			h.note = fmt.Sprintf(" (version field %q)", m["version"])
		}
		if s := m["state"]; s != "" {
			if h.price, err = priceOf(json.RawMessage(s)); err != nil {
				h.note += fmt.Sprintf(" (state: %v)", err)
			}
		}
		got[k] = h
	}
	return got, nil
}

// redisKeys lists the keys under prefix, without it.
func redisKeys(ctx context.Context, rdb *goredis.Client, prefix string) ([]string, error) {
	var out []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, strings.TrimPrefix(iter.Val(), prefix))
	}
	return out, iter.Err()
}

// webhookReceiver is a partner endpoint that verifies every request's
// Standard Webhooks signature itself (HMAC-SHA256 over
// "<webhook-id>.<webhook-timestamp>.<body>", base64, "v1," prefix) and
// records, per key, the versions delivered in arrival order.
type webhookReceiver struct {
	srv    *httptest.Server
	secret string // whsec_<base64 of key>
	key    []byte

	mu      sync.Mutex
	got     map[string][]delivery
	refused []string // requests answered 4xx, with why
}

// delivery is one verified request.
type delivery struct {
	id      string // webhook-id
	typ     string
	version int64
	at      time.Time // when it arrived
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	w := &webhookReceiver{key: make([]byte, 32), got: map[string][]delivery{}}
	if _, err := rand.Read(w.key); err != nil {
		t.Fatal(err)
	}
	w.secret = "whsec_" + base64.StdEncoding.EncodeToString(w.key)
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		var d delivery
		if d, err = w.verify(r, body); err == nil {
			var msg struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal(body, &msg)
			w.mu.Lock()
			w.got[msg.Key] = append(w.got[msg.Key], d)
			w.mu.Unlock()
			rw.WriteHeader(http.StatusNoContent)
			return
		}
	}
	w.mu.Lock()
	w.refused = append(w.refused, fmt.Sprintf("%s %.300q: %v", r.Header.Get("webhook-id"), body, err))
	w.mu.Unlock()
	http.Error(rw, err.Error(), http.StatusUnauthorized)
}

// verify checks one request as a partner would, independently of
// productstream's code, and returns what it delivers.
func (w *webhookReceiver) verify(r *http.Request, body []byte) (delivery, error) {
	if r.Method != http.MethodPost {
		return delivery{}, fmt.Errorf("method %s", r.Method)
	}
	id, ts, sigs := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return delivery{}, errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return delivery{}, fmt.Errorf("webhook-timestamp %q: %v", ts, err)
	}
	if skew := time.Since(time.Unix(sec, 0)); skew > 5*time.Minute || skew < -5*time.Minute {
		return delivery{}, fmt.Errorf("webhook-timestamp %s is %v off", ts, skew)
	}
	m := hmac.New(sha256.New, w.key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := []byte(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	ok := false
	for _, entry := range strings.Fields(sigs) {
		if sig, isV1 := strings.CutPrefix(entry, "v1,"); isV1 && hmac.Equal([]byte(sig), want) {
			ok = true
		}
	}
	if !ok {
		return delivery{}, fmt.Errorf("no v1 signature verifies (%d entries)", len(strings.Fields(sigs)))
	}
	if k := r.Header.Get("Idempotency-Key"); k != id {
		return delivery{}, fmt.Errorf("Idempotency-Key %q differs from webhook-id", k)
	}
	var msg struct {
		Type    string          `json:"type"`
		Key     string          `json:"key"`
		Version int64           `json:"version"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return delivery{}, fmt.Errorf("body: %v", err)
	}
	if wantID := msg.Key + ":" + strconv.FormatInt(msg.Version, 10); id != wantID {
		return delivery{}, fmt.Errorf("webhook-id %q, want %q from the body", id, wantID)
	}
	var data struct {
		Version int64 `json:"version"`
		Deleted bool  `json:"deleted"`
	}
	switch {
	case msg.Type == "product.deleted" && string(msg.Data) == "null":
	case msg.Type == "product.updated" && json.Unmarshal(msg.Data, &data) == nil && data.Version == msg.Version && !data.Deleted:
	default:
		return delivery{}, fmt.Errorf("type %q with data %s", msg.Type, msg.Data)
	}
	return delivery{id: id, typ: msg.Type, version: msg.Version, at: time.Now()}, nil
}

// snapshot copies what was delivered so far.
func (w *webhookReceiver) snapshot() (map[string][]delivery, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := make(map[string][]delivery, len(w.got))
	for k, ds := range w.got {
		got[k] = slices.Clone(ds)
	}
	return got, slices.Clone(w.refused)
}

// compareWebhook lists how the deliveries differ from the latest update of
// every key: the last delivery of each key must be its latest update.
func compareWebhook(want map[string]product, got map[string][]delivery) []string {
	var out []string
	for key, u := range want {
		ds := got[key]
		switch {
		case len(ds) == 0:
			out = append(out, fmt.Sprintf("%s: webhook got nothing, latest update %v", key, u))
		case ds[len(ds)-1].version != u.version || (ds[len(ds)-1].typ == "product.deleted") != u.deleted:
			out = append(out, fmt.Sprintf("%s: webhook's last delivery is %s (%s), latest update %v", key, ds[len(ds)-1].id, ds[len(ds)-1].typ, u))
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			out = append(out, fmt.Sprintf("%s: webhook got a key that has no update: %v", key, got[key]))
		}
	}
	slices.Sort(out)
	return out
}

// cleanupOpenSearch removes the sink's generations and index template when
// the test passed.
func cleanupOpenSearch(t *testing.T, base, alias string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept OpenSearch indexes %s-g* for inspection", alias)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var indexes map[string]json.RawMessage
		if err := osJSON(ctx, http.MethodGet, base+"/"+alias+"-g*", nil, &indexes); err != nil {
			t.Logf("cleanup: %v", err)
		}
		for index := range indexes {
			if err := osJSON(ctx, http.MethodDelete, base+"/"+index, nil, nil); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
		if err := osJSON(ctx, http.MethodDelete, base+"/_index_template/"+alias+"-template", nil, nil); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
}

// cleanupPostgres removes the sink's view, tables and generations row when
// the test passed.
func cleanupPostgres(t *testing.T, dsn, table string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept PostgreSQL table %s for inspection", table)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		for _, st := range []string{
			"DROP VIEW IF EXISTS " + pgx.Identifier{table + "_live"}.Sanitize(),
			"DROP TABLE IF EXISTS " + pgx.Identifier{table}.Sanitize(),
		} {
			if _, err := conn.Exec(ctx, st); err != nil {
				t.Logf("cleanup: %s: %v", st, err)
			}
		}
		if _, err := conn.Exec(ctx, "DELETE FROM productstream_sink_generations WHERE name = $1", table); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
}

// cleanupRedis removes the keys under prefix when the test passed.
func cleanupRedis(t *testing.T, rdb *goredis.Client, prefix string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept Redis keys %s* for inspection", prefix)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		keys, err := redisKeys(ctx, rdb, prefix)
		for i := range keys {
			keys[i] = prefix + keys[i]
		}
		if err == nil && len(keys) > 0 {
			err = rdb.Unlink(ctx, keys...).Err()
		}
		if err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
}

// explainVerdict runs `productstream sink explain` against dev and returns
// the last line it printed, and all it printed.
func explainVerdict(t *testing.T, dev *devProc, cfg, sinkName, key string) (string, string) {
	t.Helper()
	cmd := exec.Command(binary, "sink", "explain", sinkName, key, "--config", cfg, "--brokers", dev.kafka, "--registry", dev.registry)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sink explain %s %s: %v\nstdout:\n%s\nstderr:\n%s", sinkName, key, err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], string(out)
}

// requireEmptyDLQ fails the test if the dead letter topic of a sink holds
// anything.
func requireEmptyDLQ(t *testing.T, brokers, sinkName string) {
	t.Helper()
	for _, r := range readAll(t, brokers, config.DefaultTopicPrefix+"sink."+sinkName+".dlq") {
		var hs []string
		for _, h := range r.Headers {
			hs = append(hs, h.Key+"="+string(h.Value))
		}
		t.Errorf("sink %s dead-lettered %s: %s", sinkName, r.Key, strings.Join(hs, " "))
	}
}

// dev with four sinks (OpenSearch, PostgreSQL, Redis from products; a
// webhook from updates): after signed notifications with price changes and
// a few deletes, every backend holds exactly the latest version and price
// on products for every key, deleted keys are deleted markers hidden from
// readers, the receiver saw each key's versions in increasing order ending
// at its latest update, and `sink explain` concludes right.
func TestDevFansOutToEverySink(t *testing.T) {
	start := time.Now()
	osURL := sinktest.StartBackend(t, "opensearch")
	pgDSN := sinktest.StartBackend(t, "postgres")
	redisAddr := sinktest.StartBackend(t, "redis")
	run := runID()
	index, table, keyPrefix := "it-fanout-"+run, "it_fanout_"+run, "it-fanout/"+run+"/"
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	cleanupOpenSearch(t, osURL, index)
	cleanupPostgres(t, pgDSN, table)
	cleanupRedis(t, rdb, keyPrefix)
	hook := newWebhookReceiver(t)

	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.yaml", demoConfig(fmt.Sprintf(`
sinks:
  - name: search
    type: opensearch
    batch: {linger: 50ms}
    opensearch: {urls: [%q], index: %q}
  - name: db
    type: postgres
    batch: {linger: 50ms}
    postgres: {dsn: %q, table: %q}
  - name: cache
    type: redis
    batch: {linger: 50ms}
    redis: {addr: %q, key_prefix: %q}
  - name: partner
    type: webhook
    from: updates
    batch: {linger: 50ms}
    webhook: {url: %q, secrets: [%q], allow_private: true}
`, osURL, index, pgDSN, table, redisAddr, keyPrefix, hook.srv.URL+"/productstream", hook.secret)))
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	serde := newSerde(t, dev.registry)
	if err := serde.Register(context.Background(), devTopics.ByKind()); err != nil {
		t.Fatal(err)
	}
	t.Logf("dev up after %v: OpenSearch alias %s, PostgreSQL table %s, Redis prefix %s, webhook %s",
		time.Since(start).Round(time.Millisecond), index, table, keyPrefix, hook.srv.URL)

	// Four rounds of notifications, one quiet period apart so that each
	// gives every product an update of its own; every third product gets
	// two changes a round. Prices never end in 0, so the exact decimal
	// string is the one sent.
	const products, rounds = 30, 4
	lastPrice := map[string]string{} // product id -> price last sent
	for r := 1; r <= rounds; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, products*2)
		for w := range 4 {
			wg.Go(func() {
				for p := w; p < products; p += 4 {
					for c := range 1 + btoi(p%3 == 0) {
						price := fmt.Sprintf("%d.%d%d", 10+p, r, c+1)
						body := fmt.Sprintf(`{"productId":"p%02d","price":%s,"title":"item %d","round":%d}`, p, price, p, r)
						if err := notifyDemo(dev, []byte(body)); err != nil {
							errs <- err
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for p := range products {
			lastPrice[fmt.Sprintf("p%02d", p)] = fmt.Sprintf("%d.%d%d", 10+p, r, 1+btoi(p%3 == 0))
		}
		time.Sleep(300 * time.Millisecond)
	}
	// p00..p02 are deleted for good; p03 is deleted, then a later change
	// brings it back.
	deleted := map[string]bool{"p00": true, "p01": true, "p02": true}
	for _, id := range []string{"p00", "p01", "p02", "p03"} {
		deleteDemo(t, dev, serde, id)
	}
	time.Sleep(time.Second) // the deletes reach products (and likely the sinks) first
	lastPrice["p03"] = "99.99"
	if err := notifyDemo(dev, []byte(`{"productId":"p03","price":99.99,"title":"back again"}`)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d products notified in %d rounds, 4 deleted, 1 brought back, after %v", products, rounds, time.Since(start).Round(time.Millisecond))

	// The processor converges: every product at its last price, the deleted
	// ones tombstones.
	var want map[string]product
	deadline := time.Now().Add(30 * time.Second)
	for {
		want = readProducts(t, dev.kafka, serde)
		var behind []string
		for id, price := range lastPrice {
			key := config.DemoSource + ":" + id
			p, ok := want[key]
			if !ok || p.deleted != deleted[id] || (!p.deleted && p.price != price) {
				behind = append(behind, fmt.Sprintf("%s(%v, want price %s deleted=%v)", key, p, price, deleted[id]))
			}
		}
		if len(behind) == 0 && len(want) == products {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("products did not converge within 30s (%d keys): %v", len(want), behind)
		}
		time.Sleep(300 * time.Millisecond)
	}
	updates := readUpdates(t, dev.kafka, serde)
	t.Logf("products converged after %v", time.Since(start).Round(time.Millisecond))

	// Every sink converges on products (the webhook on updates).
	readers := []struct {
		name string
		read backendReader
	}{
		{"opensearch", openSearchReader(osURL, index)},
		{"postgres", postgresReader(pgDSN, table)},
		{"redis", redisReader(rdb, keyPrefix)},
	}
	ctx := context.Background()
	deadline = time.Now().Add(45 * time.Second)
	for {
		var problems []string
		got := map[string]map[string]held{}
		for _, b := range readers {
			h, extra, err := b.read(ctx, want)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", b.name, err))
				continue
			}
			got[b.name] = h
			for _, k := range extra {
				problems = append(problems, fmt.Sprintf("%s holds a key that is not on products: %s", b.name, k))
			}
		}
		for _, key := range slices.Sorted(mapKeys(want)) {
			bad := false
			for _, b := range readers {
				if h, ok := got[b.name]; ok && !h[key].matches(want[key]) {
					bad = true
				}
			}
			if bad {
				line := fmt.Sprintf("%s: products %v;", key, want[key])
				for _, b := range readers {
					line += fmt.Sprintf(" %s: %v;", b.name, got[b.name][key])
				}
				problems = append(problems, line)
			}
		}
		hooked, refused := hook.snapshot()
		if len(refused) > 0 {
			t.Fatalf("the webhook receiver refused %d requests (they are dead letters now), the first: %s", len(refused), refused[0])
		}
		problems = append(problems, compareWebhook(updates, hooked)...)
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sinks did not converge within 45s:\n%s", strings.Join(problems, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("every sink converged after %v", time.Since(start).Round(time.Millisecond))

	// The receiver verified every request, and saw each key's versions in
	// increasing order.
	hooked, refused := hook.snapshot()
	for _, r := range refused {
		t.Errorf("the webhook receiver refused a request: %s", r)
	}
	deliveries := 0
	for key, ds := range hooked {
		deliveries += len(ds)
		for i := 1; i < len(ds); i++ {
			if ds[i].version <= ds[i-1].version {
				t.Errorf("%s: webhook versions not strictly increasing: %v", key, ds)
				break
			}
		}
	}
	t.Logf("the webhook receiver verified %d deliveries for %d keys", deliveries, len(hooked))
	for _, name := range []string{"search", "db", "cache", "partner"} {
		requireEmptyDLQ(t, dev.kafka, name)
	}

	// sink explain concludes right for a live key and a deleted one.
	live, gone := config.DemoSource+":p10", config.DemoSource+":p01"
	for _, name := range []string{"search", "db", "cache"} {
		for key, w := range map[string]string{
			live: fmt.Sprintf("applied: the backend holds version %d, the latest on %s", want[live].version, devTopics.Products),
			gone: fmt.Sprintf("deleted at version %d", want[gone].version),
		} {
			if got, out := explainVerdict(t, dev, cfg, name, key); got != w {
				t.Errorf("sink explain %s %s: last line %q, want %q; it printed:\n%s", name, key, got, w, out)
			}
		}
	}
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sinkRole is one run of `productstream sink` as a subprocess.
type sinkRole struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited
	err  error         // its exit, once done is closed
}

// startSinkRole runs `productstream sink --config cfg --name name`, its
// stderr appended to logs; the test's end stops it with SIGTERM.
func startSinkRole(t *testing.T, cfg, name string, logs io.Writer) *sinkRole {
	t.Helper()
	fmt.Fprintf(logs, "--- sink started at %s\n", time.Now().Format(time.StampMilli))
	s := &sinkRole{cmd: exec.Command(binary, "sink", "--config", cfg, "--name", name), done: make(chan struct{})}
	s.cmd.Stderr = logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if s.err != nil {
				t.Errorf("sink did not exit cleanly on SIGTERM: %v", s.err)
			}
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			t.Errorf("sink did not stop within 30s of SIGTERM")
		}
	})
	return s
}

// kill SIGKILLs the sink and waits until it is gone.
func (s *sinkRole) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
}

// evictMembers removes every member of group, as its session timeout
// would, so that a restart need not wait for it. Call it only while no
// member runs: every member left is a killed one.
func evictMembers(t *testing.T, brokers, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	described, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("describe %s: %v", group, err)
	}
	g := described[group]
	if g.Err != nil {
		t.Fatalf("describe %s: %v", group, g.Err)
	}
	if len(g.Members) == 0 {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	for _, m := range g.Members {
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = m.MemberID
		lm.Reason = kmsg.StringPtr("SIGKILLed by the sink test")
		req.Members = append(req.Members, lm)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("evict the killed members of %s: %v", group, err)
	}
}

// committedOffsets returns the group's committed offset on each partition
// of topic (absent: none).
func committedOffsets(t *testing.T, brokers, group, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offsets, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil && !errors.Is(err, kadm.ErrEmpty) {
		t.Fatalf("offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	offsets.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// recordVersion is the version a sink takes from a products record: the
// state's version, or a tombstone's version header.
func recordVersion(t *testing.T, serde *schemas.Serde, r *kgo.Record) int64 {
	t.Helper()
	for _, h := range r.Headers {
		if h.Key == "version" {
			v, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil {
				t.Fatalf("%s at %d/%d: version header %q", r.Key, r.Partition, r.Offset, h.Value)
			}
			return v
		}
	}
	st, err := serde.DecodeState(context.Background(), r.Value)
	if err != nil {
		t.Fatalf("%s at %d/%d: %v", r.Key, r.Partition, r.Offset, err)
	}
	return st.Version
}

// appliedWrites returns the records that a call of the Redis sink's write
// script (sink/redis's writeScript) says it wrote, key (without keyPrefix)
// -> version: cmd is the call, EVALSHA (or EVAL) script numkeys KEYS...
// ARGV..., the ARGV five per key with the version first, and reply its
// answer, one integer per key, 1 for written. It returns none for any other
// command or reply.
func appliedWrites(keyPrefix string, cmd []string, reply respValue) map[string]int64 {
	if len(cmd) < 3 || !strings.EqualFold(cmd[0], "EVALSHA") && !strings.EqualFold(cmd[0], "EVAL") {
		return nil
	}
	n, err := strconv.Atoi(cmd[2])
	if err != nil || n < 1 || len(cmd) != 3+6*n || reply.kind != '*' || len(reply.elems) != n {
		return nil
	}
	keys, args := cmd[3:3+n], cmd[3+n:]
	out := map[string]int64{}
	for i, k := range keys {
		key, ours := strings.CutPrefix(k, keyPrefix)
		if a := reply.elems[i]; !ours || a.kind != ':' || a.str != "1" {
			continue
		}
		if v, err := strconv.ParseInt(args[5*i], 10, 64); err == nil {
			out[key] = v
		}
	}
	return out
}

// The sink role SIGKILLed mid-stream, in the middle of its batches (five
// records each), once at a random point and once between a write and its
// commit (Redis's reply to the write held back): after each kill none
// committed is missing from Redis, and after the second some applied writes
// are not committed; restarted, it repeats them harmlessly and ends with
// every key at the latest version and price on products and the end of
// products committed.
func TestSinkSurvivesSIGKILLBetweenWriteAndCommit(t *testing.T) {
	start := time.Now()
	redisAddr := sinktest.StartBackend(t, "redis")
	// The sink reaches Redis through a proxy that can hold back Redis's
	// reply to a write; the test reads Redis directly.
	proxy := startRedisProxy(t, redisAddr)
	run := runID()
	keyPrefix := "it-sigkill/" + run + "/"
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	cleanupRedis(t, rdb, keyPrefix)

	dir := t.TempDir()
	dev := startDev(t, filepath.Join(dir, "data"), "--config", writeFile(t, dir, "dev.yaml", demoConfig("")))
	serde := newSerde(t, dev.registry)
	const sinkName = "cache"
	group := config.DefaultTopicPrefix + "sink." + sinkName
	// Batches written as soon as their records are in, a few at a time.
	sinkCfg := writeFile(t, dir, "sink.yaml", fmt.Sprintf(`
kafka:
  brokers: [%q]
schema_registry:
  url: %q
sinks:
  - name: %s
    type: redis
    batch: {max_records: 5, linger: 1ms}
    redis: {addr: %q, key_prefix: %q}
`, dev.kafka, dev.registry, sinkName, proxy.addr(), keyPrefix))
	logs := &lockedWriter{w: &bytes.Buffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sink stderr:\n%s", logs.w)
		}
	})

	// The stream: five rounds over 100 products, every fourth product
	// twice a round, a quiet period apart, so that products gets a burst of
	// states per round.
	const products, rounds = 100, 5
	ids := make([]string, products)
	keys := make([]string, products)
	for p := range products {
		ids[p] = fmt.Sprintf("p%03d", p)
		keys[p] = config.DemoSource + ":" + ids[p]
	}
	// lastPrice is each key's price in the last round sent.
	lastPrice := func(round int) map[string]string {
		out := map[string]string{}
		for p := range products {
			out[keys[p]] = fmt.Sprintf("%d.%d%d", p+1, round, 1+btoi(p%4 == 0))
		}
		return out
	}
	var (
		// The sender goes on past rounds until the kill cycles are over,
		// so every cycle has writes to kill (at most 60 rounds).
		cyclesDone atomic.Bool
		roundsSent atomic.Int32
		sent       atomic.Int32
		sendErr    = make(chan error, 1)
		sendDone   = make(chan struct{})
	)
	go func() {
		defer close(sendDone)
		for r := 1; r <= 60 && (r <= rounds || !cyclesDone.Load()); r++ {
			var wg sync.WaitGroup
			var failed atomic.Pointer[error]
			for w := range 4 {
				wg.Go(func() {
					for p := w; p < products; p += 4 {
						for c := range 1 + btoi(p%4 == 0) {
							body := fmt.Sprintf(`{"productId":"%s","price":%d.%d%d,"round":%d}`, ids[p], p+1, r, c+1, r)
							if err := notifyDemo(dev, []byte(body)); err != nil {
								failed.CompareAndSwap(nil, &err)
								return
							}
							sent.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				sendErr <- *err
				return
			}
			roundsSent.Store(int32(r))
			time.Sleep(400 * time.Millisecond)
		}
	}()
	stopSending := func() {
		<-sendDone
		select {
		case err := <-sendErr:
			t.Fatal(err)
		default:
		}
	}
	defer stopSending()

	// snapshot is every key's Redis version (-1: none; versions start at
	// 0) in one pipeline.
	ctx := context.Background()
	snapshot := func() map[string]int64 {
		h, err := redisHashes(ctx, rdb, keyPrefix, keys)
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]int64, len(h))
		for k, v := range h {
			out[k] = -1
			if v.found {
				out[k] = v.version
			}
		}
		return out
	}

	// Two kill cycles: start the sink, SIGKILL it, and compare what it
	// wrote with what it committed. The first kill lands at a random point
	// of the sink's cycle of fetch, write, commit, once Redis shows some of
	// its writes (new versions since it started), while the stream is
	// still being sent. The second lands between a write and its commit by
	// construction: the proxy lets the sink's first write that applies a
	// record reach Redis but holds back Redis's reply, and every reply
	// after it, so the sink, which commits a batch only once its write has
	// answered, is waiting when it is killed; the kill comes once Redis
	// shows the write.
	var (
		role             *sinkRole
		kills, inFlight  int
		firstKillMidSend bool
		committedNotHeld []string
	)
	for cycle := 1; cycle <= 2; cycle++ {
		var (
			heldReplies <-chan heldReply
			heldWrites  map[string]int64 // cycle 2: the records of the write held, key -> version
		)
		if cycle == 1 {
			// A backlog first: the sink starts behind, as after an outage.
			for roundsSent.Load() < 1 {
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			// Armed before the sink starts, for the write script's reply
			// only, and only one that reports a record written: the sink's
			// startup (HELLO, PING, SCRIPT LOAD, the pointer script), its
			// reads of the pointer and the writes it repeats from the
			// first cycle (answered "already held") pass.
			heldReplies = proxy.arm(func(cmd []string, reply respValue) bool {
				return len(appliedWrites(keyPrefix, cmd, reply)) > 0
			})
		}
		before := snapshot()
		role = startSinkRole(t, sinkCfg, sinkName, logs)
		if cycle == 1 {
			deadline := time.Now().Add(30 * time.Second)
			for {
				now, changed := snapshot(), 0
				for k, v := range now {
					if v != before[k] {
						changed++
					}
				}
				if changed >= 10 {
					break
				}
				select {
				case <-role.done:
					t.Fatalf("cycle %d: the sink exited on its own: %v", cycle, role.err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("cycle %d: the sink wrote %d new versions to Redis within 30s", cycle, changed)
				}
				time.Sleep(time.Millisecond)
			}
		} else {
			select {
			case h := <-heldReplies:
				heldWrites = appliedWrites(keyPrefix, h.cmd, h.reply)
			case <-role.done:
				t.Fatalf("cycle %d: the sink exited on its own: %v", cycle, role.err)
			case <-time.After(30 * time.Second):
				t.Fatalf("cycle %d: the sink applied no record in Redis within 30s", cycle)
			}
			t.Logf("cycle %d: Redis's reply to a write of %d records held: %v", cycle, len(heldWrites), heldWrites)
			// Redis answered the write, so it shows it already; the test
			// sees it for itself before the kill.
			deadline := time.Now().Add(10 * time.Second)
			for {
				now := snapshot()
				var missing []string
				for k, v := range heldWrites {
					if now[k] != v {
						missing = append(missing, fmt.Sprintf("%s@%d (Redis holds %d)", k, v, now[k]))
					}
				}
				if len(missing) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("cycle %d: Redis answered that it applied writes it does not show: %v", cycle, missing)
				}
				time.Sleep(time.Millisecond)
			}
		}
		midSend := roundsSent.Load() < rounds
		role.kill(t)
		kills++
		if cycle == 1 {
			firstKillMidSend = midSend
		}
		// The killed sink's connections are closed already (its end
		// closed their client sides); this waits for the proxy to be done
		// with them and lets the next sink's replies through.
		proxy.reset()

		// What the killed sink left: a record at or past the committed
		// offset whose version Redis holds, newer than every record of its
		// key before that offset, was written and not committed; a record
		// before it whose key Redis holds at a lower version was committed
		// and not written (offsets would be dishonest).
		committed := committedOffsets(t, dev.kafka, group, devTopics.Products)
		inRedis := snapshot()
		recs := readAll(t, dev.kafka, devTopics.Products)
		committedVersion := map[string]int64{} // key -> highest version before the committed offset
		isCommitted := func(r *kgo.Record) bool {
			c, ok := committed[r.Partition]
			return ok && r.Offset < c
		}
		for _, r := range recs {
			if isCommitted(r) {
				key, v := string(r.Key), recordVersion(t, serde, r)
				committedVersion[key] = max(committedVersion[key], v)
				if inRedis[key] < v {
					committedNotHeld = append(committedNotHeld, fmt.Sprintf("%s version %d at %d/%d (committed %d), Redis holds %d",
						key, v, r.Partition, r.Offset, committed[r.Partition], inRedis[key]))
				}
			}
		}
		uncommitted := 0
		var written []string
		writtenVersion := map[string]int64{} // key -> version written and not committed
		for _, r := range recs {
			if isCommitted(r) {
				continue
			}
			uncommitted++
			key, v := string(r.Key), recordVersion(t, serde, r)
			if c, ok := committedVersion[key]; inRedis[key] == v && (!ok || v > c) {
				written = append(written, fmt.Sprintf("%s@%d(%d/%d, committed %d)", key, v, r.Partition, r.Offset, committed[r.Partition]))
				writtenVersion[key] = v
			}
		}
		inFlight += len(written)
		t.Logf("cycle %d: SIGKILL after %v, %d changes sent, %d records of products not committed, %d of them already in Redis: %v",
			cycle, time.Since(start).Round(time.Millisecond), sent.Load(), uncommitted, len(written), written)
		if len(committedNotHeld) > 0 {
			t.Fatalf("after SIGKILL, the sink had committed past records Redis does not hold:\n%s", strings.Join(committedNotHeld, "\n"))
		}
		// The write whose reply was held is in Redis and its records are
		// not committed; were they, the sink would have committed a batch
		// before its write had answered.
		var heldCommitted []string
		for k, v := range heldWrites {
			if w, ok := writtenVersion[k]; !ok || w != v {
				heldCommitted = append(heldCommitted, fmt.Sprintf("%s@%d", k, v))
			}
		}
		if len(heldCommitted) > 0 {
			slices.Sort(heldCommitted)
			t.Fatalf("cycle %d: records whose write Redis applied but had not yet acknowledged were committed (or not found past the committed offsets): %v", cycle, heldCommitted)
		}
		evictMembers(t, dev.kafka, group)
	}
	cyclesDone.Store(true)
	if !firstKillMidSend {
		t.Errorf("the first SIGKILL came after the last notification was sent: not mid-stream")
	}
	if inFlight == 0 {
		t.Fatalf("none of %d SIGKILLs landed between a write and its commit (no write in Redis past the committed offsets)", kills)
	}

	// Restarted, the sink finishes: every key at the latest version and
	// price on products, the end of products committed.
	startSinkRole(t, sinkCfg, sinkName, logs)
	stopSending()
	lastPrices := lastPrice(int(roundsSent.Load()))
	var want map[string]product
	deadline := time.Now().Add(30 * time.Second)
	for {
		want = readProducts(t, dev.kafka, serde)
		var behind []string
		for key, price := range lastPrices {
			if p := want[key]; p.deleted || p.price != price {
				behind = append(behind, fmt.Sprintf("%s(%v, want price %s)", key, p, price))
			}
		}
		if len(behind) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("products did not converge within 30s: %v", behind)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("%d changes sent; products converged after %v", sent.Load(), time.Since(start).Round(time.Millisecond))

	// The end of products: per partition, past the last record read
	// committed (a transaction's commit marker may follow it).
	lastData := map[int32]int64{}
	for _, r := range readAll(t, dev.kafka, devTopics.Products) {
		lastData[r.Partition] = max(lastData[r.Partition], r.Offset)
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(dev.kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	deadline = time.Now().Add(30 * time.Second)
	for {
		var problems []string
		got, extra, err := redisReader(rdb, keyPrefix)(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			if !got[key].matches(want[key]) {
				problems = append(problems, fmt.Sprintf("%s: products %v; redis %v", key, want[key], got[key]))
			}
		}
		for _, k := range extra {
			problems = append(problems, "redis holds a key that is not on products: "+k)
		}
		ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, devTopics.Products)
		if err != nil {
			t.Fatal(err)
		}
		committed := committedOffsets(t, dev.kafka, group, devTopics.Products)
		ends.Each(func(o kadm.ListedOffset) {
			last, hasData := lastData[o.Partition]
			c, ok := committed[o.Partition]
			switch {
			case !hasData:
			case !ok || c <= last:
				problems = append(problems, fmt.Sprintf("partition %d: committed %d (ok=%v), last record at %d, end offset %d", o.Partition, c, ok, last, o.Offset))
			case c > o.Offset:
				problems = append(problems, fmt.Sprintf("partition %d: committed %d past the end offset %d", o.Partition, c, o.Offset))
			}
		})
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the sink did not converge within 30s:\n%s", strings.Join(problems, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	requireEmptyDLQ(t, dev.kafka, sinkName)
	t.Logf("%d SIGKILLs, %d writes in flight at a kill; converged after %v", kills, inFlight, time.Since(start).Round(time.Millisecond))
}
