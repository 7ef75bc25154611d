package deliveries

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/schemas/schemastest"
)

// A Record's JSON has the documented snake_case fields, and nothing else.
func TestRecordJSON(t *testing.T) {
	d := ingest.Delivery{Source: "lisa-main", Route: "/webhooks/:name", Status: 202, Outcome: ingest.Accepted, Records: 1,
		Elapsed: 1500 * time.Microsecond, At: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600)), Bytes: 42,
		DeliveryID: "sha256:ab", Written: []ingest.Written{{Topic: "p.changes", Partition: 2, Offset: 7, Key: "shop:1", EventID: "sha256:ab"}}}
	got, err := json.Marshal(recordOf(d, "host:12"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-03-01T11:00:00.123456789Z","instance":"host:12","source":"lisa-main","route":"/webhooks/:name",` +
		`"status":202,"outcome":"accepted","reason":"","bytes":42,"elapsed_ms":1.5,"delivery_id":"sha256:ab","records":1,` +
		`"written":[{"topic":"p.changes","partition":2,"offset":7,"key":"shop:1","event_id":"sha256:ab"}]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	refusal, _ := json.Marshal(recordOf(ingest.Delivery{Route: "unmatched", Status: 404, Outcome: ingest.Refused, Reason: ingest.ReasonNoRoute}, "h"))
	if !strings.Contains(string(refusal), `"written":[]`) {
		t.Fatalf("a refusal's written must be an empty list: %s", refusal)
	}
}

// A Record lists at most MaxWritten records and bounds every string.
func TestRecordIsBounded(t *testing.T) {
	d := ingest.Delivery{Source: "s", Outcome: ingest.Accepted, Records: 150, At: time.Now()}
	for range 150 {
		d.Written = append(d.Written, ingest.Written{Topic: "t", Key: strings.Repeat("k", 1000), EventID: strings.Repeat("é", 200)})
	}
	r := recordOf(d, strings.Repeat("i", 300))
	if len(r.Written) != MaxWritten || r.Records != 150 || len(r.Instance) != MaxString ||
		len(r.Written[0].Key) != MaxString || len(r.Written[0].EventID) != MaxString {
		t.Fatalf("written %d (records %d), instance %d bytes, key %d bytes, event id %d bytes",
			len(r.Written), r.Records, len(r.Instance), len(r.Written[0].Key), len(r.Written[0].EventID))
	}
}

// NewRecorder refuses what cannot work, and a second recorder on one
// registry.
func TestNewRecorderRefuses(t *testing.T) {
	cl := newClient(t, []string{"127.0.0.1:1"})
	reg := prometheus.NewRegistry()
	for _, tc := range []struct {
		name  string
		cl    *kgo.Client
		topic string
		reg   prometheus.Registerer
	}{{"no client", nil, testTopic, reg}, {"no topic", cl, "", reg}, {"no registerer", cl, testTopic, nil}} {
		if _, err := NewRecorder(tc.cl, tc.topic, "i", nil, tc.reg); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := NewRecorder(cl, testTopic, "i", nil, reg); err != nil {
		t.Fatal(err)
	}
	var already prometheus.AlreadyRegisteredError
	if _, err := NewRecorder(cl, testTopic, "i", nil, reg); !errors.As(err, &already) {
		t.Fatalf("a second recorder on one registry: %v, want prometheus.AlreadyRegisteredError", err)
	}
}

// With the broker unreachable, Observe still returns at once: what the
// client cannot buffer is dropped, counted, and warned about once.
func TestObserveNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	const buffered, calls = 100, 10_000
	cl := newClient(t, []string{closed}, append(ProducerOptions(), kgo.MaxBufferedRecords(buffered))...)
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	r, err := NewRecorder(cl, testTopic, "h:1", slogTo(logs), reg)
	if err != nil {
		t.Fatal(err)
	}
	d := ingest.Delivery{Source: "s", Route: "/webhooks/:name", Status: 202, Outcome: ingest.Accepted, At: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range calls {
			r.Observe(d)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%d Observe calls had not returned after 5s with the broker unreachable", calls)
	}
	const name = "productstream_ingest_delivery_log_dropped_total"
	waitFor(t, "the drops to be counted", func() bool { return counter(t, reg, name) >= calls-buffered })
	if n := strings.Count(logs.String(), "records of deliveries dropped"); n != 1 {
		t.Fatalf("%d warnings about dropped records, want 1 (at most one a minute):\n%s", n, logs)
	}
}

// A delivery's record holds what the edge decided and never the body, its
// signature, the credentials or the client's address: checked on what a
// real edge wrote to the topic for an accepted and a refused request.
func TestRecordCarriesNoBodyOrCredentials(t *testing.T) {
	const changes, events = "p.changes", "p.events"
	c := newCluster(t, testTopic, changes, events)
	serde := schemastest.Serde(t, map[schemas.Kind][]string{schemas.KindChange: {changes}, schemas.KindEvent: {events}})
	const secret, apiKey = "secret-marker-5d1f", "apikey-marker-9c2e"
	sources, err := ingest.NewSources([]config.Source{{Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop",
		Secrets: []string{secret}, APIKeys: []string{apiKey}, MaxBodyBytes: 4096}}, ingest.Deps{Log: discard})
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := newRecorder(t, c.ListenAddrs(), "h:1")
	edgeClient := newClient(t, c.ListenAddrs(), ingest.ProducerOptions(5*time.Second)...)
	edge := ingest.New(sources, ingest.Output{Producer: ingest.NewKafkaProducer(edgeClient), Encoder: serde,
		ChangesTopic: changes, EventsTopic: events}, ingest.WithLogger(discard), ingest.WithObserver(rec))
	srv := httptest.NewServer(edge.Handler())
	t.Cleanup(srv.Close)

	body := []byte(`{"productId":"p1","title":"body-marker-77aa","price":1}`)
	signed := sources[0].Adapter.(ingest.Signer).Sign(body)
	forged := signed.Clone()
	forged.Set("X-Hmac-Signature", strings.Repeat("ab", 32))
	for _, tc := range []struct {
		hdr    http.Header
		status int
	}{{signed, http.StatusAccepted}, {forged, http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/lisa-main", bytes.NewReader(body))
		req.Header = tc.hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
		}
	}

	got := readTopic(t, c.ListenAddrs(), 2)
	forbidden := []string{"body-marker-77aa", `"productId"`, signed.Get("X-Hmac-Signature"), strings.Repeat("ab", 32),
		secret, apiKey, "127.0.0.1", "ApiKey"}
	var outcomes []string
	for _, r := range got {
		all := string(r.Key) + string(r.Value)
		for _, h := range r.Headers {
			all += h.Key + string(h.Value)
		}
		for _, f := range forbidden {
			if strings.Contains(all, f) {
				t.Fatalf("the record holds %q: key %q value %s headers %v", f, r.Key, r.Value, r.Headers)
			}
		}
		if string(r.Key) != "lisa-main" {
			t.Fatalf("key %q, want the source's name", r.Key)
		}
		var rec Record
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Bytes != int64(len(body)) || rec.Instance != "h:1" {
			t.Fatalf("record %s: want %d bytes from h:1", r.Value, len(body))
		}
		if rec.Outcome == ingest.Accepted && (len(rec.Written) != 1 || rec.Written[0].Topic != changes || rec.Written[0].Key != "shop:p1") {
			t.Fatalf("accepted record %s: want the change written", r.Value)
		}
		outcomes = append(outcomes, string(rec.Outcome)+"/"+string(rec.Reason))
	}
	if strings.Join(outcomes, " ") != "accepted/ refused/bad_signature" {
		t.Fatalf("outcomes %v", outcomes)
	}
}

// readTopic reads n records of testTopic, in the order written (they share
// a key, so one partition).
func readTopic(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl := newClient(t, brokers, kgo.ConsumeTopics(testTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}
