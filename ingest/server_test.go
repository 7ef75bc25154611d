package ingest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
)

const (
	testTopic       = "t.changes"
	testEventsTopic = "t.events"
)

type fixture struct {
	t       *testing.T
	cluster *kfake.Cluster
	url     string
	adm     *kadm.Client
	serde   *schemas.Serde
	client  *kgo.Client
	src     *Source
	events  *connEvents // the server's connections
}

var testSources = []config.Source{{
	Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop-eu",
	Secrets: []string{"s1", "s0"}, APIKeys: []string{"k1", "k0"}, MaxBodyBytes: 1024,
}}

func newFixture(t *testing.T, produceTimeout time.Duration) *fixture {
	t.Helper()
	return startEdge(t, testSources, Deps{}, produceTimeout)
}

// startEdge serves sources on a loopback HTTP server, producing to an
// in-process broker through a real registry, with produceTimeout before 503.
// The server is the public listener's (Listen), with read limits far above
// what a test on loopback needs.
func startEdge(t *testing.T, cfgs []config.Source, deps Deps, produceTimeout time.Duration, opts ...Option) *fixture {
	t.Helper()
	return startEdgeOn(t, edgeListener(produceTimeout), cfgs, deps, produceTimeout, opts...)
}

// edgeListener is startEdge's listener configuration.
func edgeListener(produceTimeout time.Duration) ListenerConfig {
	return ListenerConfig{ReadHeaderTimeout: guard, ReadTimeout: guard, WriteTimeout: guard + produceTimeout,
		IdleTimeout: guard, MaxHeaderBytes: 64 << 10, MaxConnections: 1024}
}

// startEdgeOn is startEdge on a listener configured by lc.
func startEdgeOn(t *testing.T, lc ListenerConfig, cfgs []config.Source, deps Deps, produceTimeout time.Duration, opts ...Option) *fixture {
	t.Helper()
	return startEdgeFrom(t, providers(), lc, cfgs, deps, produceTimeout, opts...)
}

// startEdgeFrom is startEdgeOn with the providers of provs (tests add
// fixture providers to the built-in ones).
func startEdgeFrom(t *testing.T, provs registry, lc ListenerConfig, cfgs []config.Source, deps Deps, produceTimeout time.Duration, opts ...Option) *fixture {
	t.Helper()
	cluster, serde, cl, out := testOutput(t, produceTimeout)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if deps.Log == nil {
		deps.Log = log
	}
	sources, err := provs.newSources(cfgs, deps)
	if err != nil {
		t.Fatal(err)
	}
	edge := New(sources, out, append([]Option{WithLogger(log), WithProduceTimeout(produceTimeout)}, opts...)...)
	addr, events := serveOn(t, edge.Handler(), lc)
	return &fixture{t: t, cluster: cluster, url: "http://" + addr, adm: kadm.NewClient(cl), serde: serde, client: cl,
		src: sources[0], events: events}
}

// testOutput is an in-process broker with the test topics, a registry
// with their schemas, and the edge's Output to them through a producer
// built as the role builds it.
func testOutput(t *testing.T, produceTimeout time.Duration) (*kfake.Cluster, *schemas.Serde, *kgo.Client, Output) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, testTopic, testEventsTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	rcl, _ := sr.NewClient(sr.URLs(reg.URL()))
	serde := schemas.NewSerde(rcl)
	if err := serde.Register(context.Background(), map[schemas.Kind][]string{schemas.KindChange: {testTopic}, schemas.KindEvent: {testEventsTopic}}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := kgo.NewClient(append(kafka.ClientOptions(cluster.ListenAddrs(), log), ProducerOptions(produceTimeout)...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cluster, serde, cl, Output{Producer: NewKafkaProducer(cl), Encoder: serde, ChangesTopic: testTopic, EventsTopic: testEventsTopic}
}

// breakProduce makes the broker refuse every produce request, as when Kafka
// is unreachable, until the returned func is called.
func (f *fixture) breakProduce() (restore func()) {
	var down atomic.Bool
	down.Store(true)
	f.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.cluster.KeepControl()
		if down.Load() {
			return nil, errors.New("broker down"), true
		}
		return nil, nil, false
	})
	return func() { down.Store(false) }
}

func sign(secret string, body []byte) string {
	return hex.EncodeToString(hmacSHA256([]byte(secret), body))
}

func (f *fixture) post(path string, body io.Reader, length int64, hdr map[string]string) (int, map[string]any, http.Header) {
	f.t.Helper()
	return f.postT(f.t, path, body, length, hdr)
}

// postT posts and fails t (not the fixture's test) on transport errors.
func (f *fixture) postT(t *testing.T, path string, body io.Reader, length int64, hdr map[string]string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+path, body)
	req.ContentLength = length
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response body is not JSON: %q", raw)
	}
	return resp.StatusCode, out, resp.Header
}

func (f *fixture) postSigned(path string, body []byte, secret, apiKey string) (int, map[string]any, http.Header) {
	return f.post(path, bytes.NewReader(body), int64(len(body)), map[string]string{
		"Authorization": "ApiKey " + apiKey, "X-Hmac-Signature": sign(secret, body), "Content-Type": "application/json",
	})
}

// records reads everything on the changes topic.
func (f *fixture) records() []*kgo.Record { return f.recordsOf(testTopic) }

// recordsOf reads everything on topic.
func (f *fixture) recordsOf(topic string) []*kgo.Record {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := f.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		f.t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			f.t.Fatalf("read %d of %d records: %v", len(out), total, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func TestAcceptedNotificationReachesKafka(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	body := []byte(`{"productId":"123","price":19.99,"title":"Shoe","currency":"EUR","updatedAt":"2026-11-01T10:00:00Z"}`)
	for i, path := range []string{"/plugin-notifications/plugin-42/updates", "/webhooks/lisa-main"} {
		status, resp, _ := f.postSigned(path, body, "s1", "k1")
		if status != http.StatusAccepted || resp["accepted"] != 1.0 {
			t.Fatalf("%s: got %d %v", path, status, resp)
		}
		recs := f.records()
		if len(recs) != i+1 {
			t.Fatalf("want %d records, got %d", i+1, len(recs))
		}
		r := recs[i]
		if string(r.Key) != "shop-eu:123" {
			t.Fatalf("key %q", r.Key)
		}
		ch, err := f.serde.DecodeChange(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if ch.ProductID != "123" || *ch.Fields.Price != "19.99" || *ch.Fields.Title != "Shoe" || ch.Raw != string(body) ||
			ch.Source != "lisa-main" || ch.Provider != "lisa" || !ch.OccurredAt.Equal(time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)) ||
			!strings.HasPrefix(ch.EventID, "sha256:") {
			t.Fatalf("change decoded wrong: %+v", ch)
		}
	}
}

// The edge reuses each record and its buffers once Kafka acknowledged it:
// deliveries sent at once, of bodies of many sizes, before, while and
// after the broker refuses writes, each land as their own record, with
// their own key, value and headers.
func TestReusedRecordsKeepEachDeliverysBytes(t *testing.T) {
	f := newFixture(t, time.Second)
	bodies := map[string]string{}
	var mu sync.Mutex
	send := func(phase string, senders, each int, want int) {
		var wg sync.WaitGroup
		for g := range senders {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("%s-%d-%d", phase, g, i)
					body := fmt.Sprintf(`{"productId":%q,"title":"t %s","description":%q}`, id, id, strings.Repeat(id, (g*each+i)*7%60))
					status, resp, _ := f.postT(t, "/webhooks/lisa-main", strings.NewReader(body), int64(len(body)),
						map[string]string{"Authorization": "ApiKey k1", "X-Hmac-Signature": sign("s1", []byte(body))})
					if status != want {
						t.Errorf("%s: %d %v, want %d", id, status, resp, want)
					}
					mu.Lock()
					bodies[id] = body
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	send("before", 8, 25, http.StatusAccepted)
	restore := f.breakProduce()
	send("refused", 4, 1, http.StatusServiceUnavailable)
	restore()
	// The producer backs off after the refusals, partition by partition:
	// wait until a round of deliveries to every partition is written.
	deadline := time.Now().Add(20 * time.Second)
	for round := 0; ; round++ {
		var failed atomic.Int32
		var wg sync.WaitGroup
		for p := range 12 {
			id := fmt.Sprintf("refused-probe-%d-%d", round, p)
			body := fmt.Sprintf(`{"productId":%q,"title":"t %s"}`, id, id)
			bodies[id] = body
			wg.Go(func() {
				if status, _, _ := f.postSigned("/webhooks/lisa-main", []byte(body), "s1", "k1"); status != http.StatusAccepted {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the producer did not write again within 20s of the broker's recovery")
		}
	}
	send("after", 8, 25, http.StatusAccepted)
	seen := map[string]int{}
	for _, r := range f.records() {
		ch, err := f.serde.DecodeChange(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		headers := map[string]string{}
		for _, h := range r.Headers {
			headers[h.Key] = string(h.Value)
		}
		if string(r.Key) != "shop-eu:"+ch.ProductID || ch.Raw != bodies[ch.ProductID] || headers["event-id"] != ch.EventID ||
			headers["source"] != "lisa-main" || *ch.Fields.Title != "t "+ch.ProductID {
			t.Fatalf("record %s (headers %v) holds %+v: not its delivery's", r.Key, headers, ch)
		}
		seen[ch.ProductID]++
	}
	for id := range bodies {
		if n := seen[id]; n != 1 && !strings.HasPrefix(id, "refused-") {
			t.Errorf("%s written %d times, want once", id, n)
		}
	}
}

// Every rotated secret and API key is accepted, and uppercase hex too.
func TestRotatedSecretsAndUppercaseHex(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	body := []byte(`{"productId":"p"}`)
	for _, tc := range []struct{ secret, key string }{{"s1", "k1"}, {"s0", "k0"}, {"s0", "k1"}} {
		if status, resp, _ := f.postSigned("/webhooks/lisa-main", body, tc.secret, tc.key); status != http.StatusAccepted {
			t.Fatalf("secret %s key %s: %d %v", tc.secret, tc.key, status, resp)
		}
	}
	status, resp, _ := f.post("/webhooks/lisa-main", bytes.NewReader(body), int64(len(body)), map[string]string{
		"Authorization": "ApiKey k1", "X-Hmac-Signature": strings.ToUpper(sign("s1", body))})
	if status != http.StatusAccepted {
		t.Fatalf("uppercase hex: %d %v", status, resp)
	}
	if n := len(f.records()); n != 4 {
		t.Fatalf("want 4 records, got %d", n)
	}
}

// chunked hides the length so only the streaming limit can catch it.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestRefusalsWriteNothing(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	good := []byte(`{"productId":"123","price":1}`)
	big := []byte(`{"productId":"123","pad":"` + strings.Repeat("x", 1024) + `"}`)
	limitPlusOne := append([]byte(`{"productId":"1","p":"`), bytes.Repeat([]byte("y"), 1024-len(`{"productId":"1","p":"`)-2+1)...)
	limitPlusOne = append(limitPlusOne, '"', '}')
	if len(limitPlusOne) != 1025 {
		t.Fatalf("limit+1 body is %d bytes", len(limitPlusOne))
	}
	sig := sign("s1", good)
	hdr := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	signed := func(body []byte) map[string]string {
		return hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sign("s1", body))
	}
	cases := []struct {
		name   string
		path   string
		body   []byte
		chunk  bool
		hdr    map[string]string
		status int
		errHas string
	}{
		{"unknown plugin id", "/plugin-notifications/nope/updates", good, false, signed(good), 404, "unknown source"},
		{"unknown source name", "/webhooks/nope", good, false, signed(good), 404, "unknown source"},
		{"missing signature", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1"), 400, "missing signature"},
		{"empty signature", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", ""), 400, "missing signature"},
		{"non-hex signature", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", strings.Repeat("zz", 32)), 400, "malformed signature"},
		{"truncated signature", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sig[:62]), 400, "malformed signature"},
		{"odd-length signature", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sig[:63]), 400, "malformed signature"},
		{"malformed signature beats bad key", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey nope", "X-Hmac-Signature", "xyz"), 400, "malformed signature"},
		{"wrong secret", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sign("wrong", good)), 401, "signature does not match"},
		{"body altered after signing", "/webhooks/lisa-main", []byte(`{"productId":"123","price":2}`), false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sig), 401, "signature does not match"},
		{"trailing newline added", "/webhooks/lisa-main", append(append([]byte{}, good...), '\n'), false, hdr("Authorization", "ApiKey k1", "X-Hmac-Signature", sig), 401, "signature does not match"},
		{"wrong api key", "/webhooks/lisa-main", good, false, hdr("Authorization", "ApiKey nope", "X-Hmac-Signature", sig), 401, "invalid API key"},
		{"missing api key", "/webhooks/lisa-main", good, false, hdr("X-Hmac-Signature", sig), 401, "invalid API key"},
		{"api key without scheme", "/webhooks/lisa-main", good, false, hdr("Authorization", "k1", "X-Hmac-Signature", sig), 401, "invalid API key"},
		{"over limit with content-length", "/webhooks/lisa-main", big, false, signed(big), 413, "too large"},
		{"limit+1 with content-length", "/webhooks/lisa-main", limitPlusOne, false, signed(limitPlusOne), 413, "too large"},
		{"limit+1 chunked", "/webhooks/lisa-main", limitPlusOne, true, signed(limitPlusOne), 413, "too large"},
		{"invalid json", "/webhooks/lisa-main", []byte(`{"productId":`), false, signed([]byte(`{"productId":`)), 400, "not a JSON object"},
		{"json array", "/webhooks/lisa-main", []byte(`[{"productId":"1"}]`), false, signed([]byte(`[{"productId":"1"}]`)), 400, "not a JSON object"},
		{"json null", "/webhooks/lisa-main", []byte(`null`), false, signed([]byte(`null`)), 400, "not a JSON object"},
		{"missing productId", "/webhooks/lisa-main", []byte(`{"price":1}`), false, signed([]byte(`{"price":1}`)), 400, "missing field productId"},
		{"empty productId", "/webhooks/lisa-main", []byte(`{"productId":""}`), false, signed([]byte(`{"productId":""}`)), 400, "productId"},
		{"object productId", "/webhooks/lisa-main", []byte(`{"productId":{}}`), false, signed([]byte(`{"productId":{}}`)), 400, "productId"},
		{"invalid utf-8", "/webhooks/lisa-main", []byte("{\"productId\":\"\xff\"}"), false, signed([]byte("{\"productId\":\"\xff\"}")), 400, "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(tc.body)
			length := int64(len(tc.body))
			if tc.chunk {
				body, length = chunked{bytes.NewReader(tc.body)}, -1
			}
			status, resp, _ := f.post(tc.path, body, length, tc.hdr)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%v)", status, tc.status, resp)
			}
			msg, _ := resp["error"].(string)
			if !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q does not contain %q", msg, tc.errHas)
			}
			if strings.Contains(msg, "s1") || (len(sig) > 0 && strings.Contains(msg, sig[:16])) {
				t.Fatalf("error leaks a secret or signature: %q", msg)
			}
		})
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("refused requests wrote %d records", n)
	}
}

// When Kafka does not acknowledge, the sender gets 503 with Retry-After, and
// the same delivery is accepted once Kafka is back.
func TestBrokerOutageAnswers503ThenRecovers(t *testing.T) {
	f := newFixture(t, time.Second)
	body := []byte(`{"productId":"outage"}`)
	// Warm up metadata so the outage hits the produce path itself.
	if status, resp, _ := f.postSigned("/webhooks/lisa-main", []byte(`{"productId":"warm"}`), "s1", "k1"); status != http.StatusAccepted {
		t.Fatalf("warm-up: %d %v", status, resp)
	}
	kafkaBack := f.breakProduce()
	status, resp, h := f.postSigned("/webhooks/lisa-main", body, "s1", "k1")
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(fmt.Sprint(resp["error"]), "unavailable") {
		t.Fatalf("during outage: %d %v Retry-After=%q", status, resp, h.Get("Retry-After"))
	}
	kafkaBack()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, resp, _ = f.postSigned("/webhooks/lisa-main", body, "s1", "k1")
		if status == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never accepted after the outage: %d %v", status, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var outage int
	for _, r := range f.records() {
		if string(r.Key) == "shop-eu:outage" {
			outage++
		}
	}
	if outage < 1 {
		t.Fatal("the retried delivery is not on the topic")
	}
}
